// The shapes the JSON API answers with: written by the server, read by the front end
// (web/src/api.ts imports this file), so both sides agree by construction. No imports.

export interface Address {
  name: string;
  address: string;
}

export interface FolderInfo {
  path: string;
  name: string;
  /** Parent path ("" at the top) and separator, for the tree. */
  parent: string;
  delimiter: string;
  specialUse: string | null;
  total: number;
  unseen: number;
  /** \Noselect: a parent only, holds no messages. */
  selectable: boolean;
}

export interface Flags {
  seen: boolean;
  flagged: boolean;
  answered: boolean;
  forwarded: boolean;
  draft: boolean;
  /** $Junk: the user marked it as spam. */
  junk: boolean;
}

export interface ListRow {
  uid: number;
  subject: string;
  from: Address | null;
  to: Address[];
  date: string;
  size: number;
  flags: Flags;
  /** multipart/mixed: carries attachments. */
  attachment: boolean;
  /** With threads: the conversation's messages (this row is its newest) and how many are unread. */
  thread?: { uids: number[]; count: number; unread: number };
}

export interface ListPage {
  /** Rows (or conversations) matching, in all. */
  total: number;
  offset: number;
  rows: ListRow[];
}

/** What creating (`path`), renaming (`path`, `from`) or deleting (`deleted`) a folder answers. */
export interface FolderChange {
  path?: string;
  /** A rename's old path. */
  from?: string;
  /** A deletion's folders: the one named and those that were under it. */
  deleted?: string[];
}

/**
 * The `folder` event of GET /api/events: a folder made, deleted or renamed (`from`: its old
 * name) by any client of the account, this tab's included.
 */
export interface FolderEvent {
  change: 'created' | 'deleted' | 'renamed';
  folder: string;
  from?: string;
}

/** What an action on messages answers (flags, move, archive, delete, spam). */
export interface ActionResult {
  /** The ids acted on: those of the request that are in the folder. */
  uids: number[];
  /** The ids of the request no longer in the folder (moved or deleted meanwhile), left alone. */
  skipped: number[];
  /** A move's folder, and each message's id there (null where the store did not say). */
  to?: string;
  moved?: (number | null)[];
  /** Deleted for good (from Trash). */
  deleted?: boolean;
}

export interface AttachmentInfo {
  /** IMAP body part number: the id of /parts/:part. */
  part: string;
  filename: string;
  type: string;
  size: number;
  /** An image shown inside the HTML (by Content-ID); listed, but not as an attachment to download first. */
  inline: boolean;
}

export interface PolicyReason {
  check: string;
  result: string;
  detail: string | null;
}

export interface MessageView {
  uid: number;
  folder: string;
  /** The folder's UIDVALIDITY as the message was read: a reply or forward keeps it with its origin. */
  uidValidity: number;
  subject: string;
  from: Address[];
  to: Address[];
  cc: Address[];
  bcc: Address[];
  replyTo: Address[];
  date: string;
  flags: Flags;
  messageId: string | null;
  inReplyTo: string | null;
  references: string | null;
  /** The text to show when there is no HTML, and to quote in a reply. */
  text: string;
  /** There is an HTML body: shown from /body in a sandboxed iframe. */
  html: boolean;
  /** Remote resources blocked in the HTML, tracking pixels removed, redirects unwrapped. */
  privacy: { blocked: number; trackers: number; unwrapped: number; remoteAllowed: boolean };
  attachments: AttachmentInfo[];
  /** Why the policy service filed it where it did (X-Mailyard-Policy), if it says. */
  policy: { verdict: string; reasons: PolicyReason[] } | null;
  listUnsubscribe: string | null;
}

/**
 * POST /api/account/password: changed, and this session goes on under a new cookie and
 * CSRF token; or changed, but this session was signed out everywhere while the change ran
 * (`signedOut`): the next step is the login, with the new password.
 */
export type PasswordChanged = { changed: true; csrf: string } | { changed: true; signedOut: true };

/** GET /api/account: the account page. */
export interface AccountInfo {
  account: string;
  admin: boolean;
  twoFactor: {
    /** The platform offers two-factor login. */
    available: boolean;
    enabled: boolean;
    recoveryCodesLeft: number;
  };
}

/** POST /api/account/two-factor/begin: what the authenticator app needs. */
export interface TwoFactorEnrolment {
  secret: string;
  uri: string;
  /** The URI as a QR code, a PNG data: URL. */
  qr: string;
}

/** A DNS check's status; `unchecked`: the resolver failed, which says nothing about the record. */
export type DnsCheckStatus = 'ok' | 'wrong' | 'missing' | 'unchecked';

/** `GET /api/admin/dns/domains/:domain` */
export interface DnsDomainReport {
  domain: string;
  checkedAt: string;
  records: {
    kind: 'mx' | 'spf' | 'dkim' | 'dmarc' | 'mta-sts' | 'tls-rpt' | 'srv';
    name: string;
    type: 'MX' | 'TXT' | 'CNAME' | 'SRV';
    /** The record to publish, as a resolver returns it. */
    expected: string[];
    /** What DNS answers now. */
    found: string[];
    status: DnsCheckStatus;
    /** The difference, or why it could not be checked. */
    detail?: string;
    /** The zone-file line to paste. */
    zoneLine: string;
  }[];
}

/** `GET /api/admin/dns/server` */
export interface DnsServerReport {
  hostname: string;
  checkedAt: string;
  addresses: { address: string; forward: boolean; ptr: string[]; status: DnsCheckStatus; detail?: string }[];
  /** `checked: false`: the list could not be asked (then `listed` says nothing). */
  dnsbl: { list: string; address: string; listed: boolean; checked: boolean; detail?: string }[];
  tls: { notAfter: string | null; daysLeft: number | null; detail?: string };
  /** Why no address could be checked. */
  detail?: string;
}
