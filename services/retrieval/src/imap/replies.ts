// Tagged NO/BAD replies, thrown by handlers as ImapReply and rendered in one place.
// Response codes: RFC 9051 §7.1, RFC 5530.

export class ImapReply extends Error {
  constructor(
    readonly status: 'NO' | 'BAD',
    readonly code: string | null,
    text: string,
    /** The refusal may be preceded by EXPUNGE responses (RFC 9051 §7.5.1: not for FETCH, STORE, SEARCH). */
    readonly allowExpunge = false,
  ) {
    super(text);
  }
}

export const reply = {
  bad: (text: string) => new ImapReply('BAD', null, text),
  /** A sequence number past the messages the client knows: BAD, as Dovecot answers (RFC 9051 §6.4.5 and §9). */
  invalidMessageSet: () => new ImapReply('BAD', null, 'Invalid messageset'),
  /** RFC 9051 §7.1: LOGINDISABLED / plaintext refused before TLS. */
  privacyRequired: () =>
    new ImapReply('NO', 'PRIVACYREQUIRED', 'Use STARTTLS (or port 993) before logging in'),
  authFailed: () => new ImapReply('NO', 'AUTHENTICATIONFAILED', 'Authentication failed'),
  locked: () => new ImapReply('NO', 'UNAVAILABLE', 'Too many failed logins; try again later'),
  /** RFC 5530 UNAVAILABLE: the login could not be checked now (a backend failed). */
  authUnavailable: () =>
    new ImapReply('NO', 'UNAVAILABLE', 'Temporary authentication failure; try again later'),
  /** RFC 5530 UNAVAILABLE: a backend (Redis, the store's disk) failed; the client tries again later. */
  backendUnavailable: () => new ImapReply('NO', 'UNAVAILABLE', 'Temporarily unavailable; try again later'),
  tooManySessions: () => new ImapReply('NO', 'LIMIT', 'Too many sessions for this account'),
  nonexistent: () => new ImapReply('NO', 'NONEXISTENT', 'No such mailbox'),
  tryCreate: () => new ImapReply('NO', 'TRYCREATE', 'No such mailbox'),
  alreadyExists: () => new ImapReply('NO', 'ALREADYEXISTS', 'Mailbox already exists'),
  cannot: (text: string) => new ImapReply('NO', 'CANNOT', text),
  /** A name that is no modified UTF-7 (RFC 3501 §5.1.3): no mailbox can have it (Dovecot: NO). */
  invalidMailboxName: (why: string) =>
    new ImapReply('NO', 'CANNOT', `Mailbox name is not valid mUTF-7: ${why}`),
  /** RFC 5530 LIMIT: a valid request past an implementation limit (a name the store cannot hold). */
  limit: (text: string) => new ImapReply('NO', 'LIMIT', text),
  /** RFC 9051 §5.1: "%" and "*" are valid in names but cannot be listed apart from the wildcards. */
  wildcardName: () =>
    new ImapReply('NO', 'CANNOT', 'Mailbox names cannot contain the LIST wildcards % and *'),
  /** RFC 9051 §6.3.12: an APPEND date-time the store cannot keep as the message's INTERNALDATE. */
  internalDateRange: () => new ImapReply('NO', 'LIMIT', 'Date-time outside the range the store can keep'),
  readOnly: () => new ImapReply('NO', 'READ-ONLY', 'Mailbox is read-only'),
  /** RFC 5530 EXPUNGEISSUED: a message the command names was expunged by another session. */
  expungeIssued: (allowExpunge: boolean) =>
    new ImapReply('NO', 'EXPUNGEISSUED', 'Some of the requested messages no longer exist', allowExpunge),
  overQuota: () => new ImapReply('NO', 'OVERQUOTA', 'Quota exceeded'),
  tooBig: () => new ImapReply('NO', 'TOOBIG', 'Message too large'),
  /** An APPEND of no bytes: not a message (Dovecot's words; RFC 5322 §3.5 asks for headers). */
  emptyMessage: () => new ImapReply('NO', null, "Can't save a zero byte message"),
  /** RFC 3516 §4.3: BINARY of a part whose Content-Transfer-Encoding is not known (Dovecot's words). */
  unknownCte: () => new ImapReply('NO', 'UNKNOWN-CTE', 'Unknown Content-Transfer-Encoding'),
  badCharset: (list: string[]) =>
    new ImapReply('NO', `BADCHARSET (${list.join(' ')})`, 'Charset not supported'),
  noPerm: (text: string) => new ImapReply('NO', 'NOPERM', text),
  notSelected: () => new ImapReply('BAD', null, 'No mailbox selected'),
};
