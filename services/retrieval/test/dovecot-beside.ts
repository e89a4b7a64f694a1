// The pair the differential tests compare: Mailyard's retrieval on a test platform, and a
// private Dovecot beside it with the same users and passwords, each with a Maildir root
// of its own.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { accountDir } from '@mailyard/mailstore';
import { dovecotPath, startDovecot, tempDir, type DovecotServer } from '@mailyard/testkit';
import { startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, startRetrieval, type Retrieval } from './helpers.js';

export interface DovecotBeside {
  p: Platform;
  r: Retrieval;
  dovecot: DovecotServer;
  /** Dovecot's Maildir root: `<mail>/<user>` is a user's Maildir. */
  mail: string;
  /**
   * Puts `messages` in `user`'s INBOX on both servers, as new mail named without sizes
   * (as another delivery agent leaves it): both number them in the order given.
   */
  seed(user: string, messages: Buffer[], tag: string): void;
  close(): Promise<void>;
}

function seedMaildir(maildir: string, messages: Buffer[], tag: string): void {
  for (const d of ['new', 'cur', 'tmp']) mkdirSync(join(maildir, d), { recursive: true });
  messages.forEach((data, i) =>
    writeFileSync(join(maildir, 'new', `${1_700_000_000 + i}.M${i}P1.${tag}`), data),
  );
}

export async function startDovecotBeside(opts: {
  /** Names the temporary folder. */
  name: string;
  users: string[];
  /** Dovecot settings added to the test's base configuration. */
  extraConfig: string;
  pop3?: boolean;
  retrieval?: Record<string, unknown>;
}): Promise<DovecotBeside> {
  const dir = tempDir(`mailyard-${opts.name}-`);
  const mail = join(dir.path, 'mail');
  let p: Platform | undefined;
  let r: Retrieval | undefined;
  let dovecot: DovecotServer | undefined;
  const close = async () => {
    await dovecot?.stop();
    dir.cleanup();
    await r?.stop();
    await p?.close();
  };
  try {
    p = await startPlatform({ withDelivery: false });
    r = await startRetrieval(p, opts.retrieval);
    chmodSync(dir.path, 0o755); // Dovecot's processes run as the dovecot user
    dovecot = await startDovecot({
      dir: join(dir.path, 'dovecot'),
      mailLocation: `maildir:${dovecotPath(mail)}/%u`,
      mailRoots: [mail],
      users: opts.users.map((user) => ({ user, password: PASSWORD })),
      extraConfig: opts.extraConfig,
      ...(opts.pop3 ? { pop3: true } : {}),
    });
    const platform = p;
    const seed = (user: string, messages: Buffer[], tag: string) => {
      seedMaildir(accountDir(platform.maildir, user), messages, tag);
      seedMaildir(join(mail, user), messages, tag);
      spawnSync('chown', ['-R', 'dovecot:dovecot', join(mail, user)]);
    };
    return { p, r, dovecot, mail, seed, close };
  } catch (err) {
    // what started is stopped: a failed start leaves no server holding the test open
    await close();
    throw err;
  }
}
