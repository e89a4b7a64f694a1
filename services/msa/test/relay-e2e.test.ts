// Submission to a remote server through the real outbound relay: what the receiver gets
// verifies for both DKIM signatures, and the Bcc recipient is reached without a Bcc header;
// 8-bit mail still verifies after a server without 8BITMIME made the relay send it as 7 bit.
import assert from 'node:assert/strict';
import { isAscii } from 'node:buffer';
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
/** A server without 8BITMIME. */
let sevenBitMta: RemoteMta;
let relay: RelayHandle;
before(async () => {
  const port = await freePort();
  t = await startMsaTestbed({
    platform: {
      zone: {
        'remote.test': { MX: [{ priority: 10, exchange: 'mx.remote.test' }] },
        'mx.remote.test': { A: ['127.0.0.7'] },
        'seven.test': { MX: [{ priority: 10, exchange: 'mx.seven.test' }] },
        'mx.seven.test': { A: ['127.0.0.8'] },
      },
    },
  });
  mta = await startRemoteMta('127.0.0.7', port);
  sevenBitMta = await startRemoteMta('127.0.0.8', port, { hide8BitMime: true });
  relay = await startRelay(t.p, { outbound_port: port });
  await addAccount(t.p.directory, 'sig@signed.test');
  const store = new DkimKeyStore(t.p.redis.redis);
  for (const [selector, algo] of [
    ['rsa1', 'rsa'],
    ['ed1', 'ed25519'],
  ] as const) {
    const key = await store.add('signed.test', selector, generateDkimKey(algo));
    const rec = dnsRecord('signed.test', selector, key);
    t.p.dns.set(rec.name, { TXT: [rec.value] });
  }
});
after(async () => {
  await relay.stop();
  await mta.close();
  await sevenBitMta.close();
  await t.close();
});

const submission = () =>
  nodemailer.createTransport({
    host: '127.0.0.1',
    port: t.msa.ports.submissions,
    secure: true,
    tls: { rejectUnauthorized: false },
    auth: { user: 'sig@signed.test', pass: PASSWORD },
  });

/** Every DKIM signature of a received message passes, as the receiver checks them. */
async function assertSignaturesPass(data: Buffer): Promise<void> {
  const res = new Resolver();
  res.setServers([t.p.env.DNS_SERVERS!]);
  const verified = await dkimVerify(data, {
    resolver: (name: string, type: string) => res.resolve(name, type) as Promise<string[][]>,
  });
  assert.equal(verified.results.length, 2, JSON.stringify(verified.results));
  for (const x of verified.results) assert.equal(x.status.result, 'pass', JSON.stringify(x.status));
}

test('submitted, signed, relayed: the receiver verifies both DKIM signatures', async () => {
  const transport = submission();
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
  await assertSignaturesPass(got.data);
});

test('8-bit mail relayed to a server without 8BITMIME still passes DKIM', async () => {
  const transport = submission();
  const text = 'Grüße aus Köln, ½ €';
  await transport.sendMail({
    envelope: { from: 'sig@signed.test', to: ['bob@seven.test'], use8BitMime: true },
    raw: Buffer.from(
      'From: Sig <sig@signed.test>\r\nTo: bob@seven.test\r\nSubject: eight bit\r\n' +
        'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n' +
        `Content-Transfer-Encoding: 8bit\r\n\r\n${text}\r\n`,
    ),
  });
  transport.close();
  const got = await waitFor(() => sevenBitMta.received[0] ?? null, { timeoutMs: 20_000 });
  assert.ok(isAscii(got.data), 'sent as 7 bit');
  await assertSignaturesPass(got.data);
  // the text is intact, now quoted-printable (RFC 2045 §6.7)
  const [head, body] = got.data.toString('latin1').split('\r\n\r\n');
  assert.match(head!, /^Content-Transfer-Encoding: quoted-printable$/im);
  const decoded = body!
    .replace(/=\r\n/g, '')
    .replace(/=([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  assert.equal(Buffer.from(decoded, 'latin1').toString('utf8').trim(), text);
});

test('a message the user signed (PGP/MIME) is relayed as it was written', async () => {
  const transport = submission();
  // RFC 3156: the signature covers the first part's header and body, bytes as they are
  const signedPart =
    'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n' +
    'Grüße, signiert\r\n';
  const raw = Buffer.from(
    'From: Sig <sig@signed.test>\r\nTo: bob@remote.test\r\nSubject: signed\r\nMIME-Version: 1.0\r\n' +
      'Content-Type: multipart/signed; micalg=pgp-sha256;\r\n protocol="application/pgp-signature"; boundary="b1"\r\n\r\n' +
      `--b1\r\n${signedPart}--b1\r\nContent-Type: application/pgp-signature\r\n\r\n` +
      '-----BEGIN PGP SIGNATURE-----\r\n\r\niQEzBAEBCAAdFiEE\r\n-----END PGP SIGNATURE-----\r\n--b1--\r\n',
  );
  await transport.sendMail({
    envelope: { from: 'sig@signed.test', to: ['bob@remote.test'], use8BitMime: true },
    raw,
  });
  transport.close();
  const got = await waitFor(() => mta.received.find((m) => m.data.includes('Subject: signed')) ?? null, {
    timeoutMs: 20_000,
  });
  assert.ok(got.data.includes(Buffer.from(`--b1\r\n${signedPart}--b1`)), 'the signed part is unchanged');
  await assertSignaturesPass(got.data);
});
