// Real mail clients logging in to the testbed's retrieval, for the account tests.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ImapFlow } from 'imapflow';
import { HOST, SECRET, type WebmailTestbed } from './webmail-harness.js';

/** Logs in over IMAPS with imapflow: true when it got in, false when the login was refused. */
export async function imapLogin(t: WebmailTestbed, user: string, pass: string): Promise<boolean> {
  const c = new ImapFlow({
    host: '127.0.0.1',
    port: t.retrieval.ports.imaps,
    secure: true,
    tls: { rejectUnauthorized: false, servername: HOST },
    auth: { user, pass },
    logger: false,
  });
  c.on('error', () => undefined);
  try {
    await c.connect();
    await c.logout();
    return true;
  } catch (err) {
    if ((err as { authenticationFailed?: boolean }).authenticationFailed) return false;
    throw err;
  }
}

/** The implicit-TLS ports of the testbed's IMAP, POP3 and submission. */
export const mailPorts = (t: WebmailTestbed) => ({
  imap: t.retrieval.ports.imaps,
  pop3: t.retrieval.ports.pop3s,
  smtp: t.msa.ports.submissions,
});

/** An IMAPS session of the store acting for `account`, as the webmail logs in (its service login). */
export async function storeSession(t: WebmailTestbed, account: string): Promise<ImapFlow> {
  const c = new ImapFlow({
    host: '127.0.0.1',
    port: t.retrieval.ports.imaps,
    secure: true,
    tls: { rejectUnauthorized: false },
    auth: { user: 'webmail', pass: SECRET, authzid: account },
    logger: false,
  });
  await c.connect();
  return c;
}

/** Subject → flags of every message in `folder`, as the store has them now (read on `imap`). */
export async function storedFlags(imap: ImapFlow, folder: string): Promise<Map<string, Set<string>>> {
  const out = new Map<string, Set<string>>();
  const lock = await imap.getMailboxLock(folder);
  try {
    // what other sessions changed meanwhile (the webmail's) is told on a NOOP
    await imap.noop();
    if (!imap.mailbox || !imap.mailbox.exists) return out;
    for await (const m of imap.fetch('1:*', { envelope: true, flags: true }))
      out.set(m.envelope?.subject ?? '', m.flags ?? new Set());
  } finally {
    lock.release();
  }
  return out;
}

/** Sessions held open by Python's imaplib, poplib and smtplib (open-sessions.py), driven line by line. */
export interface HeldSessions {
  /** The next line the server sends on a session (its goodbye, once it ends it), or "EOF". */
  next(label: string): Promise<string>;
  /** Whether a NOOP on the session is still answered. */
  alive(label: string): Promise<boolean>;
  close(): void;
}

export async function holdSessions(
  specs: { label: string; proto: 'imap' | 'pop3' | 'smtp'; port: number; user: string; pass: string }[],
): Promise<HeldSessions> {
  const py = spawn(
    'python3',
    [fileURLToPath(new URL('./open-sessions.py', import.meta.url)), JSON.stringify(specs)],
    {
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  py.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines = createInterface({ input: py.stdout });
  const waiting: ((line: string) => void)[] = [];
  const queued: string[] = [];
  lines.on('line', (l) => {
    const w = waiting.shift();
    if (w) w(l);
    else queued.push(l);
  });
  const line = () =>
    new Promise<string>((resolve, reject) => {
      const q = queued.shift();
      if (q !== undefined) return resolve(q);
      const timer = setTimeout(
        () => reject(new Error(`no answer from the clients; stderr: ${stderr}`)),
        30_000,
      );
      waiting.push((l) => {
        clearTimeout(timer);
        resolve(l);
      });
    });
  for (const s of specs) {
    const l = await line();
    if (l !== `${s.label} ready`) throw new Error(`${s.label} did not log in: ${l} ${stderr}`);
  }
  const ask = async (verb: string, label: string) => {
    py.stdin.write(`${verb} ${label}\n`);
    const l = await line();
    const prefix = `${label} ${verb === 'wait' ? 'said' : verb}: `;
    if (!l.startsWith(prefix)) throw new Error(`unexpected answer ${l}`);
    return l.slice(prefix.length);
  };
  return {
    next: (label) => ask('wait', label),
    alive: async (label) => (await ask('noop', label)) === 'ok',
    close: () => py.kill(),
  };
}
