// The JSON API as the front end sees it: typed calls, the CSRF token on every change,
// errors as ApiError with the server's stable code and its sentence for the user.

import type {
  AccountInfo,
  ActionResult,
  Address,
  AttachmentInfo,
  Flags,
  FolderChange,
  FolderEvent,
  FolderInfo,
  ListPage,
  ListRow,
  MessageView,
  PasswordChanged,
  TwoFactorEnrolment,
} from '../../src/api-types.ts';

export type { AccountInfo, ActionResult, Address, Flags, FolderChange, FolderEvent, TwoFactorEnrolment };

export interface AppPassword {
  name: string;
  created: string;
  lastUsed?: string;
  lastIp?: string;
}
/** One recent login (packages/auth's LoginRecord). */
export interface LoginEntry {
  at: string;
  protocol: 'imap' | 'pop3' | 'submission' | 'webmail';
  ip: string;
  client?: string;
  via: 'password' | 'app-password';
  appPassword?: string;
}
/** The out-of-office reply (packages/mail-rules' Vacation). */
export interface Vacation {
  enabled: boolean;
  subject: string;
  body: string;
  start: string | null;
  end: string | null;
  days: number;
}
export interface Forwarding {
  targets: string[];
  keepCopy: boolean;
}
export type Folder = FolderInfo;
export type Row = ListRow;
export type Page = ListPage;
export type Attachment = AttachmentInfo;
export type Message = MessageView;

export interface SessionInfo {
  authenticated: boolean;
  account?: string;
  csrf?: string;
  loginToken?: string;
  next?: 'second-factor';
  limits?: { attachments: number };
}

export interface DraftBody {
  from: string;
  fromName: string;
  to: string;
  cc: string;
  bcc: string;
  subject: string;
  text: string;
  html: string | null;
  attachments: ({ upload: string } | { folder: string; uid: number; part: string })[];
  inReplyTo: string | null;
  references: string | null;
  /** What this answers or forwards, with its folder's UIDVALIDITY (null: a draft from before it was kept). */
  origin: { folder: string; uid: number; kind: 'reply' | 'forward'; uidValidity: number | null } | null;
  draftUid: number | null;
}

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

let csrf = '';
/** Called when the server says the session is gone: the app shows the login again. */
let onLoggedOut: (why: string) => void = () => undefined;

/** What the login says after a password change whose session was signed out meanwhile. */
const PASSWORD_CHANGED_SIGNED_OUT =
  'Your password was changed. This session was signed out meanwhile: log in with the new password.';

export function setCsrf(token: string): void {
  csrf = token;
}
export function onSessionEnd(fn: (why: string) => void): void {
  onLoggedOut = fn;
}

/** A refusal that means the session is gone tells the app (the login, or a sign-in over the editor). */
function noteRefusal(status: number, code: string, message: string): void {
  if (status === 401 && (code === 'not_logged_in' || code === 'second_factor_required')) onLoggedOut(message);
}

/**
 * Asked when the server refuses a request's CSRF token (another tab of this browser logged in
 * again, and the cookie is now that login's): true if the app took the token of the session the
 * browser now holds, and the request may go once more.
 */
let onStaleToken: () => Promise<boolean> = () => Promise.resolve(false);
export function onCsrfRefused(fn: () => Promise<boolean>): void {
  onStaleToken = fn;
}

/** The app's answer while it is being asked: requests refused together (a save, an upload) wait for one. */
let staleTokenAsked: Promise<boolean> | null = null;
function tokenRenewed(): Promise<boolean> {
  staleTokenAsked ??= onStaleToken().finally(() => {
    staleTokenAsked = null;
  });
  return staleTokenAsked;
}

/**
 * Every refused request ends here, whatever sent it (fetch, or an upload's XHR): one whose
 * CSRF token was refused goes once more (`again`, null when this was that once) after the
 * app took the token of the session the browser now holds; any other refusal is thrown, and
 * the app told when it means that the session is gone.
 */
async function refused<T>(
  status: number,
  code: string,
  message: string,
  extra: Record<string, unknown>,
  again: (() => Promise<T>) | null,
): Promise<T> {
  if (status === 403 && code === 'csrf' && again && (await tokenRenewed())) return again();
  noteRefusal(status, code, message);
  throw new ApiError(status, code, message, extra);
}

export async function call<T>(method: string, path: string, body?: unknown, again = true): Promise<T> {
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      credentials: 'same-origin',
      headers: {
        accept: 'application/json',
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(method !== 'GET' && csrf ? { 'x-csrf-token': csrf } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch {
    throw new ApiError(0, 'offline', 'The server cannot be reached; check the connection');
  }
  const data = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  if (!res.ok) {
    const code = typeof data.error === 'string' ? data.error : 'error';
    const message = typeof data.message === 'string' ? data.message : `Request failed (${res.status})`;
    return refused(res.status, code, message, data, again ? () => call<T>(method, path, body, false) : null);
  }
  return data as T;
}

export const qs = (params: Record<string, string | number | boolean | undefined>) =>
  '?' +
  new URLSearchParams(
    Object.entries(params)
      .filter(([, v]) => v !== undefined && v !== false && v !== '')
      .map(([k, v]): [string, string] => [k, v === true ? '1' : String(v)]),
  ).toString();

export const api = {
  session: () => call<SessionInfo>('GET', '/api/session'),
  login: (username: string, password: string) =>
    call<SessionInfo>('POST', '/api/login', { username, password }),
  secondFactor: (code: string) => call<SessionInfo>('POST', '/api/login/second-factor', { code }),
  logout: () => call<SessionInfo>('POST', '/api/logout', {}),
  folders: () => call<{ folders: Folder[] }>('GET', '/api/folders'),
  createFolder: (name: string, parent?: string) =>
    call<FolderChange>('POST', '/api/folders', parent ? { name, parent } : { name }),
  renameFolder: (folder: string, name: string) =>
    call<FolderChange>('POST', '/api/folders/rename', { folder, name }),
  deleteFolder: (folder: string) => call<FolderChange>('POST', '/api/folders/delete', { folder }),
  list: (p: {
    folder: string;
    offset: number;
    limit: number;
    sort: string;
    order: string;
    q: string;
    threads: boolean;
    unread: boolean;
    /** UIDs not to list (moves on their way), comma-separated. */
    exclude?: string;
  }) => call<Page>('GET', '/api/messages' + qs(p)),
  message: (folder: string, uid: number) => call<Message>('GET', `/api/messages/${uid}` + qs({ folder })),
  draft: (folder: string, uid: number) =>
    call<Omit<DraftBody, 'attachments' | 'draftUid'> & { uid: number; attachments: Attachment[] }>(
      'GET',
      `/api/messages/${uid}/draft` + qs({ folder }),
    ),
  flags: (folder: string, uids: number[], add: string[], remove: string[] = []) =>
    call<ActionResult>('POST', '/api/messages/flags', { folder, uids, add, remove }),
  move: (folder: string, uids: number[], to: string) =>
    call<ActionResult>('POST', '/api/messages/move', { folder, uids, to }),
  archive: (folder: string, uids: number[]) =>
    call<ActionResult>('POST', '/api/messages/archive', { folder, uids }),
  remove: (folder: string, uids: number[]) =>
    call<ActionResult>('POST', '/api/messages/delete', { folder, uids }),
  spam: (folder: string, uids: number[], spam: boolean) =>
    call<ActionResult>('POST', '/api/messages/spam', { folder, uids, spam }),
  allowSender: (address: string, allow: boolean) =>
    call<{ allow: boolean }>('POST', '/api/remote-senders', { address, allow }),
  identities: () => call<{ identities: { address: string }[]; primary: string }>('GET', '/api/identities'),
  saveDraft: (d: DraftBody) =>
    call<{
      uid: number | null;
      folder: string;
      attachments: { folder: string; uid: number; part: string }[];
    }>('PUT', '/api/drafts', d),
  deleteDraft: (uid: number) => call<{ deleted: boolean }>('DELETE', `/api/drafts/${uid}`),
  deleteUpload: (id: string) => call<{ deleted: boolean }>('DELETE', `/api/uploads/${id}`),
  account: () => call<AccountInfo>('GET', '/api/account'),
  twoFactorBegin: (password: string) =>
    call<TwoFactorEnrolment>('POST', '/api/account/two-factor/begin', { password }),
  /** The session goes on under a new cookie and CSRF token; the account's others end. */
  twoFactorConfirm: async (code: string) => {
    const res = await call<{ recoveryCodes: string[]; csrf?: string }>(
      'POST',
      '/api/account/two-factor/confirm',
      { code },
    );
    if (res.csrf) setCsrf(res.csrf);
    return res;
  },
  twoFactorDisable: (password: string) =>
    call<{ enabled: false }>('POST', '/api/account/two-factor/disable', { password }),
  appPasswords: () => call<{ appPasswords: AppPassword[] }>('GET', '/api/account/app-passwords'),
  createAppPassword: (name: string, password: string) =>
    call<{ name: string; secret: string }>('POST', '/api/account/app-passwords', { name, password }),
  revokeAppPassword: (name: string) =>
    call<{ revoked: string }>('POST', '/api/account/app-passwords/revoke', { name }),
  logins: () => call<{ logins: LoginEntry[] }>('GET', '/api/account/logins'),
  /**
   * The session goes on under a new cookie and CSRF token; or, signed out everywhere while
   * the password was being changed, it has ended: the login, saying the password changed.
   */
  changePassword: async (current: string, password: string) => {
    const res = await call<PasswordChanged>('POST', '/api/account/password', { current, password });
    if ('csrf' in res) setCsrf(res.csrf);
    else onLoggedOut(PASSWORD_CHANGED_SIGNED_OUT);
    return res;
  },
  signOutEverywhere: () => call<{ ended: number }>('POST', '/api/account/sign-out-everywhere', {}),
  vacation: () => call<Vacation>('GET', '/api/account/vacation'),
  setVacation: (v: Vacation) => call<Vacation>('POST', '/api/account/vacation', v),
  forwarding: () => call<Forwarding>('GET', '/api/account/forwarding'),
  setForwarding: (f: Forwarding) => call<Forwarding>('POST', '/api/account/forwarding', f),
  send: (d: DraftBody) => call<{ messageId: string; warnings: string[] }>('POST', '/api/send', d),
};

export const bodyUrl = (folder: string, uid: number, remote: boolean) =>
  `/api/messages/${uid}/body` + qs({ folder, remote });
export const partUrl = (folder: string, uid: number, part: string, inline = false) =>
  `/api/messages/${uid}/parts/${part}` + qs({ folder, inline });

/** What the server says of an attachment it took. */
export interface Uploaded {
  id: string;
  filename: string;
  type: string;
  size: number;
}

/** An upload with progress (fetch cannot report it): resolves with the server's description. */
export function upload(
  file: File,
  onProgress: (sent: number, total: number) => void,
): { done: Promise<Uploaded>; abort: () => void } {
  let xhr: XMLHttpRequest | null = null;
  let aborted = false;
  const cancelled = () => new ApiError(0, 'aborted', 'Upload cancelled');
  const attempt = (again: boolean): Promise<Uploaded> => {
    // cancelled while the session was being read again: not sent once more
    if (aborted) return Promise.reject(cancelled());
    const x = new XMLHttpRequest();
    xhr = x;
    return new Promise<Uploaded>((resolve, reject) => {
      x.open('POST', '/api/uploads');
      x.setRequestHeader('content-type', 'application/octet-stream');
      x.setRequestHeader('x-filename', encodeURIComponent(file.name));
      x.setRequestHeader('x-content-type', file.type || 'application/octet-stream');
      x.setRequestHeader('x-csrf-token', csrf);
      x.upload.onprogress = (e) => onProgress(e.loaded, e.total || file.size);
      x.onload = () => {
        let data: Record<string, unknown> = {};
        try {
          data = JSON.parse(x.responseText) as Record<string, unknown>;
        } catch {
          // not JSON: the status says enough
        }
        if (x.status === 200) {
          resolve(data as never);
          return;
        }
        const code = typeof data.error === 'string' ? data.error : 'error';
        const message = typeof data.message === 'string' ? data.message : `Upload failed (${x.status})`;
        resolve(refused(x.status, code, message, data, again ? () => attempt(false) : null));
      };
      x.onerror = () => reject(new ApiError(0, 'offline', 'The upload failed; check the connection'));
      x.onabort = () => reject(cancelled());
      x.send(file);
    });
  };
  return {
    done: attempt(true),
    abort: () => {
      aborted = true;
      xhr?.abort();
    },
  };
}
