// A POP3 login that fails after the mailbox lock was taken (the store failing to open the
// mailbox) gives the lock back: the client's retry in the same session, or a new session,
// logs in once the store reads again, instead of -ERR [IN-USE] (RFC 2449 §8.1.1: the
// mailbox is in use by another session) until the first connection ends.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { renameSync, rmSync, symlinkSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { folderDir } from '@mailyard/mailstore';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, sampleMessage, sendRaw, startRetrieval, type Retrieval } from './helpers.js';

const USER = 'pop3-fault@example.test';
let p: Platform;
let r: Retrieval;
before(async () => {
  p = await startPlatform();
  await addAccount(p.directory, USER);
  await sendRaw(p, USER, sampleMessage(1));
  r = await startRetrieval(p);
});
after(async () => {
  await r?.stop();
  await p?.close();
});

/** A POP3 client on a raw socket: `cmd` sends a line and resolves with its one-line answer. */
async function pop3(port: number): Promise<{ cmd(line: string): Promise<string>; socket: Socket }> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  let text = '';
  let waiter: (() => void) | null = null;
  socket.on('data', (d: Buffer) => {
    text += d.toString('latin1');
    waiter?.();
  });
  const line = async (): Promise<string> => {
    while (!text.includes('\r\n')) await new Promise<void>((resolve) => (waiter = resolve));
    const nl = text.indexOf('\r\n');
    const got = text.slice(0, nl);
    text = text.slice(nl + 2);
    return got;
  };
  assert.match(await line(), /^\+OK /);
  return {
    socket,
    cmd(l: string) {
      socket.write(l + '\r\n');
      return line();
    },
  };
}

test(
  'a login the store failed leaves the mailbox free for the retry in the same session',
  { timeout: 60_000 },
  async () => {
    const c = await pop3(r.ports.pop3);
    const cur = join(folderDir(p.maildir, USER, 'INBOX'), 'cur');
    // a symlink loop: every look at cur/ fails (ELOOP), as on a failing disk
    renameSync(cur, `${cur}.kept`);
    symlinkSync(cur, cur);
    try {
      assert.equal(await c.cmd(`USER ${USER}`), '+OK');
      assert.match(await c.cmd(`PASS ${PASSWORD}`), /^-ERR \[SYS\/TEMP\] /);
    } finally {
      rmSync(cur);
      renameSync(`${cur}.kept`, cur);
    }
    // another session may have it now: no one holds it
    const other = await pop3(r.ports.pop3);
    assert.equal(await other.cmd(`USER ${USER}`), '+OK');
    assert.equal(await other.cmd(`PASS ${PASSWORD}`), '+OK Logged in, 1 message');
    assert.match(await other.cmd('QUIT'), /^\+OK /);
    other.socket.destroy();
    // and the first session's own retry logs in
    assert.equal(await c.cmd(`USER ${USER}`), '+OK');
    assert.equal(await c.cmd(`PASS ${PASSWORD}`), '+OK Logged in, 1 message');
    assert.match(await c.cmd('STAT'), /^\+OK 1 \d+$/);
    c.socket.destroy();
  },
);
