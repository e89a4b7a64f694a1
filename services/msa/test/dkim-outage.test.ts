import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import { after, before, test } from 'node:test';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import nodemailer from 'nodemailer';
import { DkimKeyStore, dnsRecord, generateDkimKey } from '@mailyard/dkim';
import { queueDepth, startPrivateRedis, type PrivateRedis } from '@mailyard/testkit';
import { addAccount } from '../../../test/harness.js';
import { PASSWORD, queueIdOf, startMsaTestbed, type MsaTestbed } from './msa-harness.js';

// The DKIM keys live on a redis-server of this test's own, which it stops: the key
// store failing while a message is signed.
let redis: PrivateRedis;
let t: MsaTestbed;

before(async () => {
  redis = await startPrivateRedis();
  t = await startMsaTestbed({
    dkimRedis: redis.client(),
    platform: {
      zone: {
        'remote.test': { MX: [{ priority: 10, exchange: 'mx.remote.test' }] },
        'mx.remote.test': { A: ['127.0.0.1'] },
      },
    },
  });
  await addAccount(t.p.directory, 'sig@signed.test');
  await addAccount(t.p.directory, 'alice@example.test');
  const key = await new DkimKeyStore(redis.client()).add('signed.test', 'rsa1', generateDkimKey('rsa'));
  const rec = dnsRecord('signed.test', 'rsa1', key);
  t.p.dns.set(rec.name, { TXT: [rec.value] });
});
after(async () => {
  await t?.close();
  await redis?.close();
});

/** A desktop client on 587 (STARTTLS, AUTH PLAIN). */
const client = (user: string) =>
  nodemailer.createTransport({
    host: '127.0.0.1',
    port: t.msa.ports.submission,
    secure: false,
    requireTLS: true,
    tls: { rejectUnauthorized: false },
    auth: { user, pass: PASSWORD, method: 'PLAIN' },
  });

const mail = (from: string, subject: string) => ({
  from,
  to: 'bob@remote.test',
  subject,
  text: 'hello',
});

async function verifiesAs(message: Buffer, selector: string) {
  const res = new Resolver();
  res.setServers([t.p.env.DNS_SERVERS!]);
  const verified = await dkimVerify(message, {
    resolver: (name: string, type: string) => res.resolve(name, type) as Promise<string[][]>,
  });
  assert.deepEqual(
    verified.results.map((r) => [r.signingDomain, r.selector, r.status.result]),
    [['signed.test', selector, 'pass']],
  );
}

test('key store down: 451 4.3.0 and nothing queued; the retry is signed', { timeout: 60_000 }, async () => {
  const sig = client('sig@signed.test');
  try {
    const first = await sig.sendMail(mail('sig@signed.test', 'store up'));
    await verifiesAs((await t.takeOutbound(queueIdOf(first.response))).body, 'rsa1');

    await redis.kill();
    await assert.rejects(sig.sendMail(mail('sig@signed.test', 'store down')), (err: Error) => {
      const e = err as { responseCode?: number; response?: string };
      assert.equal(e.responseCode, 451, e.response ?? err.message);
      assert.match(e.response ?? '', /^451 4\.3\.0 /);
      return true;
    });
    // refused, not queued unsigned, and counted under the reason the README lists
    assert.equal(await queueDepth(t.p.vhost.name, 'outbound'), 0);
    const metrics = await (await fetch(`http://127.0.0.1:${t.rt.httpPort}/metrics`)).text();
    assert.match(metrics, /^mailyard_msa_rejections_total\{reason="dkim_unavailable"\} 1$/m);

    // the client's retry, once the store is back, leaves signed
    await redis.start();
    const again = await sig.sendMail(mail('sig@signed.test', 'store down'));
    await verifiesAs((await t.takeOutbound(queueIdOf(again.response))).body, 'rsa1');
  } finally {
    sig.close();
  }
});

test('a domain without keys is still sent unsigned while the store answers', async () => {
  const alice = client('alice@example.test');
  try {
    const info = await alice.sendMail(mail('alice@example.test', 'no keys'));
    const { body } = await t.takeOutbound(queueIdOf(info.response));
    assert.ok(!body.toString().includes('DKIM-Signature'), 'signed without a key');
  } finally {
    alice.close();
  }
});
