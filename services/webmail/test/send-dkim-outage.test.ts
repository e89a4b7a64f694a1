// Sending from the webmail while the msa cannot read the DKIM keys: the user is told to
// try again (503), and the message is neither sent unsigned nor filed in Sent.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { Operations } from '@mailyard/admin';
import { LOCAL_DOMAINS_KEY } from '@mailyard/directory';
import { startPrivateRedis, waitFor, type PrivateRedis } from '@mailyard/testkit';
import { ALICE, BOB, startWebmailTestbed, type WebmailTestbed } from './webmail-harness.js';
import { WebClient, q } from './web-client.js';

let redis: PrivateRedis;
let t: WebmailTestbed;
let alice: WebClient;

before(async () => {
  redis = await startPrivateRedis();
  // the msa reads the DKIM keys from a redis-server of this test's own
  t = await startWebmailTestbed({ msa: { dkim_signing: true }, msaParts: { dkimRedis: redis.client() } });
  // a key is stored only for a domain the same Redis lists as local, as the platform's one
  // Redis does; this one holds the keys alone
  await redis.client().sadd(LOCAL_DOMAINS_KEY, 'example.test');
  await new Operations(redis.client(), 'cli:test', { directory: t.p.directory }).generateDkimKey(
    'example.test',
    {
      algorithm: 'ed25519',
      selector: 'ed1',
    },
  );
  alice = new WebClient(t.webmail.port, t.ca);
  assert.equal((await alice.login(ALICE)).status, 200);
});
after(async () => {
  await t?.close();
  await redis?.close();
});

const draft = (subject: string) => ({ from: ALICE, to: `"Bob" <${BOB}>`, subject, text: 'Hi Bob' });

test(
  'DKIM key store down: 503, not sent unsigned; sent signed once it is back',
  { timeout: 60_000 },
  async () => {
    await redis.kill();
    const refused = await alice.post('/api/send', draft('Signed or not at all'));
    assert.equal(refused.status, 503, refused.text);
    assert.equal(refused.json.error, 'unavailable');
    assert.match(refused.json.message, /try again/);
    const sent = await alice.get('/api/messages' + q({ folder: 'Sent', limit: 50 }));
    assert.deepEqual(sent.json.rows, [], 'filed in Sent though not sent');

    await redis.start();
    const ok = await alice.post('/api/send', draft('Signed or not at all'));
    assert.equal(ok.status, 200, ok.text);
    // bob gets one copy, the one sent once the keys could be read, and it is signed
    const copies = await waitFor(() => {
      const found = t.p
        .inbox(BOB)
        .map((f) => readFileSync(f, 'utf8'))
        .filter((m) => m.includes('Subject: Signed or not at all'));
      return found.length ? found : null;
    });
    assert.equal(copies.length, 1);
    assert.match(copies[0]!, /^DKIM-Signature: [^]*d=example\.test;[^]*s=ed1;/m);
  },
);
