import { ReplyError } from 'ioredis';

/**
 * Every error the API answers with: an HTTP status, a stable code the front end (and
 * scripts) can rely on, and one sentence for a person. Anything else thrown becomes
 * `500 internal` and is logged with its stack.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** IMAP or submission failed or is unreachable: a temporary failure, never "not found". */
export class UpstreamError extends Error {
  constructor(message: string, cause?: unknown) {
    super(message, { cause });
  }
}

/** The IMAP connection closed under a request (the store ended the session with BYE). */
export class ConnectionLostError extends UpstreamError {}

/** Refused recipients a sentence names; the rest are counted. */
const REFUSED_NAMED = 5;

export const errors = {
  badRequest: (message: string) => new ApiError(400, 'bad_request', message),
  notLoggedIn: () => new ApiError(401, 'not_logged_in', 'Not logged in, or the session has expired'),
  /** The account ended its sessions (the same code: the front end shows the login, with this). */
  sessionEnded: () =>
    new ApiError(
      401,
      'not_logged_in',
      'This session was ended (signed out everywhere, a new password, or two-factor turned on): log in again',
    ),
  invalidCredentials: () => new ApiError(401, 'invalid_credentials', 'Wrong address or password'),
  wrongPassword: () => new ApiError(403, 'wrong_password', 'That is not your current password'),
  conflict: (message: string) => new ApiError(409, 'conflict', message),
  /** The draft a save would replace was replaced or discarded in another window meanwhile. */
  draftChanged: () =>
    new ApiError(
      409,
      'draft_changed',
      'This draft was changed or discarded in another window: your text is kept here, and saving again keeps it as a draft of its own',
    ),
  /** Another window's save is replacing this draft right now: the editor saves again shortly. */
  draftBusy: () =>
    new ApiError(503, 'draft_busy', 'This draft is being saved from another window: saving again shortly', {
      retryAfter: 2,
    }),
  invalidCode: () => new ApiError(401, 'invalid_code', 'Wrong or already used code'),
  tooManyCodes: () =>
    new ApiError(401, 'too_many_codes', 'Too many wrong codes: log in again with your password'),
  secondFactorRequired: () =>
    new ApiError(401, 'second_factor_required', 'The second step of the login is still missing'),
  notAdmin: () => new ApiError(403, 'not_admin', 'Only administrators can do this'),
  csrf: () => new ApiError(403, 'csrf', 'Missing or wrong CSRF token; reload the page'),
  crossSite: () => new ApiError(403, 'cross_site', 'Request from another site refused'),
  notFound: () => new ApiError(404, 'not_found', 'No such page'),
  noSuchFolder: () => new ApiError(404, 'no_such_folder', 'No such folder'),
  folderExists: () => new ApiError(409, 'folder_exists', 'A folder of that name already exists'),
  specialFolder: (label: string) =>
    new ApiError(
      400,
      'special_folder',
      `${label} cannot be renamed or deleted: the webmail and mail clients keep mail there`,
    ),
  specialParent: (label: string) =>
    new ApiError(
      400,
      'special_folder',
      `${label} cannot hold other folders: make it at the top or inside one of your own`,
    ),
  uploadsWaiting: (cap: number) =>
    new ApiError(
      413,
      'too_many_uploads',
      `Attachments waiting to be sent may take ${Math.floor(cap / 1024 / 1024)} MB at most: send or remove some first`,
      { limit: cap },
    ),
  /** Redis, which keeps the uploads with the sessions, is at its maxmemory: nothing of the file was kept. */
  noRoomForUploads: () =>
    new ApiError(
      507,
      'no_room',
      'The server has no room for attachments just now: try again later, or tell your administrator',
    ),
  overQuota: () =>
    new ApiError(507, 'over_quota', 'Your mailbox is full: delete some messages, or empty the trash'),
  imapRefused: (text: string) => new ApiError(409, 'refused', `The mail store refused: ${text}`),
  noSuchMessage: () => new ApiError(404, 'no_such_message', 'No such message in this folder'),
  noSuchPart: () => new ApiError(404, 'no_such_part', 'No such part in this message'),
  noSuchUpload: () => new ApiError(404, 'no_such_upload', 'No such attachment; upload it again'),
  bodyTooLarge: (limit: number) =>
    new ApiError(413, 'too_large', `Too large: this request takes at most ${formatBytes(limit)}`, { limit }),
  tooLarge: (limit: number) =>
    new ApiError(413, 'too_large', `Too large: at most ${formatBytes(limit)} of attachments per message`, {
      limit,
    }),
  badSender: (address: string) =>
    new ApiError(400, 'bad_sender', `You cannot send as ${address}: not one of your addresses`),
  locked: (seconds: number) =>
    new ApiError(
      429,
      'locked',
      `Too many failed login attempts, try again in ${seconds} ${seconds === 1 ? 'second' : 'seconds'}`,
      {
        retryAfter: seconds,
      },
    ),
  rateLimited: (seconds: number) =>
    new ApiError(
      429,
      'rate_limited',
      `Too many login attempts, try again in ${seconds} ${seconds === 1 ? 'second' : 'seconds'}`,
      {
        retryAfter: seconds,
      },
    ),
  sendRefused: (reply: string) => new ApiError(422, 'send_refused', `The mail server refused: ${reply}`),
  /**
   * The msa ended the session after refusing recipients, before the message: it went to
   * no one. Named (the first few, the count of the rest; all of them under `refused`) so
   * that the user can correct them, as Roundcube names the recipient the server refused.
   * Refused for good if any was (the user must act), else a temporary failure.
   */
  recipientsRefused: (refused: { address: string; reply: string }[]) => {
    const shown = refused.slice(0, REFUSED_NAMED).map((r) => r.address);
    const rest = refused.length - shown.length;
    const names = shown.join(', ') + (rest ? ` and ${rest} more` : '');
    const count = `${refused.length} recipient${refused.length === 1 ? '' : 's'}`;
    const permanent = refused.some((r) => r.reply.startsWith('5'));
    const sentence =
      `Nothing was sent: the mail server ${permanent ? 'refused' : 'could not take'} ${count}` +
      `${permanent ? '' : ' for now'}, then ended the connection: ${names} (${refused[0]!.reply}). ` +
      (permanent ? 'Correct or remove them and send again' : 'Try again shortly');
    return permanent
      ? new ApiError(422, 'send_refused', sentence, { refused })
      : new ApiError(503, 'unavailable', sentence, { refused });
  },
  sendTimeout: () =>
    new ApiError(
      503,
      'send_timeout',
      'The mail server did not confirm the message in time: try sending it again shortly',
    ),
  unavailable: () =>
    new ApiError(503, 'unavailable', 'The mail service is temporarily unavailable; try again shortly'),
};

export function formatBytes(n: number): string {
  if (n >= 1024 * 1024) return `${Math.floor((n / (1024 * 1024)) * 10) / 10} MB`;
  if (n >= 1024) return `${Math.floor(n / 1024)} KB`;
  return `${n} bytes`;
}

/** redis-errors' base class (ioredis exports only ReplyError): Redis's own refusals and the commands ioredis gave up. */
const RedisError = Object.getPrototypeOf(ReplyError) as typeof Error;

/**
 * Redis failed (sessions, uploads, the directory, the rate limit all live there): a
 * command refused by Redis itself (LOADING, READONLY, MISCONF, OOM...), given up after
 * its retries while Redis is unreachable, or not answered within REDIS_COMMAND_TIMEOUT.
 * A temporary failure like an IMAP one, never a 500.
 */
export function isRedisFailure(err: unknown): boolean {
  if (err instanceof RedisError) return true;
  // ioredis's own words for a connection that closed under a command, and for its timeout
  return (
    err instanceof Error && (err.message === 'Connection is closed.' || err.message === 'Command timed out')
  );
}

/** Response codes of a tagged NO that say the store cannot now, not that it will not (RFC 5530). */
const TEMPORARY = new Set(['UNAVAILABLE', 'INUSE', 'SERVERBUG']);

/**
 * What a user reads of a NO from the IMAP store (imapflow's error for it): a full mailbox
 * is said as such, a temporary refusal is a temporary failure, any other refusal is the
 * store's own words. Null for anything that is not a NO.
 */
export function fromImapRefusal(err: unknown): ApiError | UpstreamError | null {
  const e = err as { responseStatus?: string; serverResponseCode?: string; responseText?: string };
  if (e?.responseStatus !== 'NO') return null;
  const code = (e.serverResponseCode ?? '').toUpperCase();
  if (code === 'OVERQUOTA') return errors.overQuota();
  // a folder removed meanwhile (by another client)
  if (code === 'NONEXISTENT' || code === 'TRYCREATE') return errors.noSuchFolder();
  // CREATE or RENAME to a name another folder has (RFC 5530 §3)
  if (code === 'ALREADYEXISTS') return errors.folderExists();
  // a message of the set expunged meanwhile (by another client): nothing was changed
  if (code === 'EXPUNGEISSUED') return errors.noSuchMessage();
  if (TEMPORARY.has(code)) return new UpstreamError(`IMAP refused: ${e.responseText ?? code}`, err);
  // the store's sentence, without its response code, and never more than a line
  const text = (e.responseText ?? 'refused').replace(/^\[[^\]]*\]\s*/, '').slice(0, 200);
  return errors.imapRefused(text);
}
