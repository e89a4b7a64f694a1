// The webmail's login acting for a user (SASL PLAIN with an authorisation identity, as
// Dovecot's master users): accepted only for the configured service name, secret and
// networks; a user's own login can never name somebody else.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ImapFlow } from 'imapflow';
import { createLogger } from '@mailyard/observability';
import { waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, sampleMessage, sendRaw, startRetrieval, type Retrieval } from './helpers.js';
import { RawImap } from './raw-imap.js';

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
const SECRET = 'a-random-service-secret-of-some-length';
const plain = (...parts: string[]) => Buffer.from(parts.join('\0')).toString('base64');

let p: Platform;
let r: Retrieval;
const logLines: Record<string, unknown>[] = [];

before(async () => {
  p = await startPlatform();
  await addAccount(p.directory, ALICE);
  await addAccount(p.directory, BOB);
  const logger = createLogger('retrieval', 'info', {
    write: (line: string) => void logLines.push(JSON.parse(line) as Record<string, unknown>),
  });
  r = await startRetrieval(
    p,
    { service_login_password: SECRET, service_login_networks: '127.0.0.1/32' },
    { logger },
  );
  await sendRaw(p, ALICE, sampleMessage(1, ' for alice'));
  await sendRaw(p, BOB, sampleMessage(2, ' for bob'));
});
after(async () => {
  await r?.stop();
  await p?.close();
});

const imap = (auth: { user: string; pass: string; authzid?: string }) =>
  new ImapFlow({
    host: '127.0.0.1',
    port: r.ports.imaps,
    secure: true,
    tls: { rejectUnauthorized: false },
    auth,
    logger: false,
  });

test('the service login acts for the user it names, and the log says so', { timeout: 30_000 }, async () => {
  const c = imap({ user: 'webmail', pass: SECRET, authzid: ALICE });
  await c.connect();
  try {
    const lock = await c.getMailboxLock('INBOX');
    try {
      const msg = await c.fetchOne('*', { source: true });
      assert.ok(msg && msg.source?.toString().includes('for alice'));
    } finally {
      lock.release();
    }
  } finally {
    await c.logout();
  }
  const line = await waitFor(() => logLines.find((l) => l.msg === `logged in: webmail for ${ALICE}`), {
    what: 'the login log line',
  });
  assert.equal(line.account, ALICE);
  assert.equal(line.via, 'service');
});

test('a user cannot act as someone else with their own password', { timeout: 30_000 }, async () => {
  const c = imap({ user: ALICE, pass: PASSWORD, authzid: BOB });
  await assert.rejects(c.connect(), (err: Error & { authenticationFailed?: boolean }) => {
    return err.authenticationFailed === true;
  });
  c.close();
  // the same over the wire, and over POP3
  const raw = await RawImap.connect(r.ports.imaps, { tls: true });
  await raw.until(/^\* OK/m);
  assert.match(
    await raw.cmd('a', `AUTHENTICATE PLAIN ${plain(BOB, ALICE, PASSWORD)}`),
    /^a NO \[AUTHENTICATIONFAILED\]/m,
  );
  raw.socket.destroy();
  const pop = await RawImap.connect(r.ports.pop3);
  await pop.until(/^\+OK/m);
  pop.socket.write(`AUTH PLAIN ${plain(BOB, ALICE, PASSWORD)}\r\n`);
  assert.match(await pop.until(/^[+-]/m), /^-ERR \[AUTH\]/m);
  pop.socket.destroy();
});

test(
  'the service login is refused with a wrong secret, for a non-account, and from elsewhere',
  {
    timeout: 30_000,
  },
  async () => {
    const tryLogin = async (authcid: string, secret: string, authzid: string, localAddress?: string) => {
      const raw = await RawImap.connect(r.ports.imap, localAddress ? { localAddress } : {});
      await raw.until(/^\* OK/m);
      const out = await raw.cmd('a', `AUTHENTICATE PLAIN ${plain(authzid, authcid, secret)}`);
      raw.socket.destroy();
      return out;
    };
    assert.match(
      await tryLogin('webmail', 'not the secret at all', ALICE),
      /^a NO \[AUTHENTICATIONFAILED\]/m,
    );
    assert.match(await tryLogin('webmail', SECRET, 'nobody@example.test'), /^a NO \[AUTHENTICATIONFAILED\]/m);
    assert.match(await tryLogin('other-service', SECRET, ALICE), /^a NO \[AUTHENTICATIONFAILED\]/m);
    // 127.0.0.2 is not in SERVICE_LOGIN_NETWORKS: the right secret is refused from there
    const elsewhere = await RawImap.connect(r.ports.imaps, { tls: true, localAddress: '127.0.0.2' });
    await elsewhere.until(/^\* OK/m);
    assert.match(
      await elsewhere.cmd('a', `AUTHENTICATE PLAIN ${plain(ALICE, 'webmail', SECRET)}`),
      /^a NO \[AUTHENTICATIONFAILED\]/m,
    );
    elsewhere.socket.destroy();
    // the right secret from the allowed address still works after the failures above
    assert.match(await tryLogin('webmail', SECRET, ALICE), /^a OK/m);
  },
);

test('POP3 takes the service login too', { timeout: 30_000 }, async () => {
  const pop = await RawImap.connect(r.ports.pop3);
  await pop.until(/^\+OK/m);
  pop.socket.write(`AUTH PLAIN ${plain(BOB, 'webmail', SECRET)}\r\n`);
  assert.match(await pop.until(/^[+-]/m), /^\+OK Logged in, 1 message\r?$/m);
  pop.socket.write('RETR 1\r\n');
  assert.match(await pop.until(/^\.\r?$/m), /for bob/);
  pop.socket.destroy();
});
