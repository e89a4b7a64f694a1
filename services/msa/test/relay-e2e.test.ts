// Submission to a remote server through the real outbound relay: what the receiver gets
// verifies for both DKIM signatures, and the Bcc recipient is reached without a Bcc header.
import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import { after, before, test } from 'node:test';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import nodemailer from 'nodemailer';
import { DkimKeyStore, dnsRecord, generateDkimKey } from '@mailyard/dkim';
import { waitFor } from '@mailyard/testkit';
import { addAccount } from '../../../test/harness.js';
import { PASSWORD, startMsaTestbed, type MsaTestbed } from './msa-harness.js';
import {
  freePort,
  startRelay,
  startRemoteMta,
  type RelayHandle,
  type RemoteMta,
} from '../../outbound-relay/test/helpers.js';

let t: MsaTestbed;
let mta: RemoteMta;
let relay: RelayHandle;
before(async () => {
  const port = await freePort();
  t = await startMsaTestbed({
    platform: {
      zone: {
        'remote.test': { MX: [{ priority: 10, exchange: 'mx.remote.test' }] },
        'mx.remote.test': { A: ['127.0.0.7'] },
      },
    },
  });
  mta = await startRemoteMta('127.0.0.7', port);
  relay = await startRelay(t.p, { outbound_port: port });
  await addAccount(t.p.directory, 'sig@signed.test');
});
after(async () => {
  await relay.stop();
  await mta.close();
  await t.close();
});

test('submitted, signed, relayed: the receiver verifies both DKIM signatures', async () => {
  const store = new DkimKeyStore(t.p.redis.redis);
  for (const [selector, algo] of [
    ['rsa1', 'rsa'],
    ['ed1', 'ed25519'],
  ] as const) {
    const key = await store.add('signed.test', selector, generateDkimKey(algo));
    const rec = dnsRecord('signed.test', selector, key);
    t.p.dns.set(rec.name, { TXT: [rec.value] });
  }
  const transport = nodemailer.createTransport({
    host: '127.0.0.1',
    port: t.msa.ports.submissions,
    secure: true,
    tls: { rejectUnauthorized: false },
    auth: { user: 'sig@signed.test', pass: PASSWORD },
  });
  await transport.sendMail({
    from: 'Sig <sig@signed.test>',
    to: 'bob@remote.test',
    bcc: 'carol@remote.test',
    subject: 'end to end',
    text: 'line\n.dot line\nlast',
  });
  transport.close();
  const got = await waitFor(() => (mta.received.length ? mta.received[0] : null), { timeoutMs: 20_000 });
  assert.deepEqual(got.to.sort(), ['bob@remote.test', 'carol@remote.test']);
  assert.ok(!/^Bcc:/im.test(got.data.toString()));
  const res = new Resolver();
  res.setServers([t.p.env.DNS_SERVERS!]);
  const verified = await dkimVerify(got.data, {
    resolver: (name: string, type: string) => res.resolve(name, type) as Promise<string[][]>,
  });
  assert.equal(verified.results.length, 2, JSON.stringify(verified.results));
  for (const x of verified.results) assert.equal(x.status.result, 'pass', JSON.stringify(x.status));
});
