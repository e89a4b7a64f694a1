import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { dkimSign } from 'mailauth';
import { PolicyRules } from '@mailyard/policy-rules';
import { RawSmtp, waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';

// SPF, DKIM, DMARC through real SMTP sessions from 127.0.0.5, with the DNS answers
// (SPF records, DKIM key, DMARC policies) served by the test's DNS server.

let p: Platform;
const { privateKey, publicKey } = generateKeyPairSync('rsa', {
  modulusLength: 2048,
  publicKeyEncoding: { type: 'spki', format: 'der' },
  privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
});

before(async () => {
  p = await startPlatform({
    inbound: { mynetworks: '127.0.0.1/32', policy_timeout: '20s' },
    policy: {
      mynetworks: '127.0.0.1/32',
      authserv_id: 'mx.mailyard.test',
      greylist_auto_allow_authenticated: true,
    },
    zone: {
      '5.0.0.127.in-addr.arpa': { PTR: ['client.example.net'] },
      'client.example.net': { A: ['127.0.0.5'], TXT: ['v=spf1 a -all'] },
      'spf-pass.test': { TXT: ['v=spf1 ip4:127.0.0.5 -all'] },
      'spf-fail.test': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
      'spf-soft.test': { TXT: ['v=spf1 ip4:192.0.2.1 ~all'] },
      'spf-perm.test': { TXT: ['v=spf1 ip4:127.0.0.5 bogus:thing -all'] },
      'spf-temp.test': { SERVFAIL: true },
      // the record is there, the one it includes (or redirects to) is behind a failing server
      'spf-include-temp.test': { TXT: ['v=spf1 include:_spf.spf-broken.test -all'] },
      '_dmarc.spf-include-temp.test': { TXT: ['v=DMARC1; p=reject'] },
      'spf-redirect-temp.test': { TXT: ['v=spf1 redirect=_spf.spf-broken.test'] },
      '_dmarc.spf-redirect-temp.test': { TXT: ['v=DMARC1; p=reject'] },
      '_spf.spf-broken.test': { SERVFAIL: true },
      'signed.test': { TXT: ['v=spf1 -all'] },
      '_dmarc.signed.test': { TXT: ['v=DMARC1; p=reject'] },
      'sel._domainkey.signed.test': { TXT: [`v=DKIM1; k=rsa; p=${publicKey.toString('base64')}`] },
      // the key's DNS server is failing
      'signed-temp.test': { TXT: ['v=spf1 -all'] },
      '_dmarc.signed-temp.test': { TXT: ['v=DMARC1; p=reject'] },
      'sel._domainkey.signed-temp.test': { SERVFAIL: true },
      'dmarc-reject.test': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
      '_dmarc.dmarc-reject.test': { TXT: ['v=DMARC1; p=reject'] },
      'dmarc-quarantine.test': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
      '_dmarc.dmarc-quarantine.test': { TXT: ['v=DMARC1; p=quarantine'] },
    },
  });
  await addAccount(p.directory, 'alice@example.test');
  const rules = new PolicyRules(p.redis.redis, p.redis.prefix);
  for (const [l, e] of Object.entries({
    smtpd_client_restrictions: [],
    smtpd_helo_restrictions: [],
    smtpd_sender_restrictions: [],
    smtpd_recipient_restrictions: [],
    smtpd_data_restrictions: ['check_authentication'],
  }))
    await rules.set(l, e);
  const v = Number(await p.redis.redis.get('policy:version'));
  await waitFor(() => p.policy!.rulesVersion >= v);
});
after(() => p.close());

async function send(from: string, message: string): Promise<{ code: number; text: string }> {
  const c = await RawSmtp.connect(p.inbound.port, '127.0.0.1', { localAddress: '127.0.0.5' });
  try {
    await c.read();
    await c.cmd('EHLO client.example.net');
    assert.equal((await c.cmd(`MAIL FROM:<${from}>`)).code, 250);
    assert.equal((await c.cmd('RCPT TO:<alice@example.test>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    c.write(message.replace(/\r?\n/g, '\r\n') + '\r\n.\r\n');
    return await c.read(20_000);
  } finally {
    c.close();
  }
}

const msg = (from: string, extra = '') =>
  `${extra}From: <${from}>\nTo: <alice@example.test>\nSubject: test\nMessage-ID: <${Math.random()}@x>\n\nhello\n`;

/** The delivered copy whose Subject/body carries `marker`, from INBOX or Junk. */
async function delivered(marker: string, folder = 'INBOX'): Promise<string> {
  return waitFor(
    () =>
      p
        .inbox('alice@example.test', folder)
        .map((f) => readFileSync(f, 'latin1'))
        .find((t) => t.includes(marker)),
    { what: `message ${marker} in ${folder}` },
  );
}

const authResults = (text: string) =>
  /^Authentication-Results: mx\.mailyard\.test;[^]*?\r\n(?![ \t])/m.exec(text)?.[0] ?? '';

describe('SPF', () => {
  for (const [domain, result] of [
    ['spf-pass.test', 'pass'],
    ['spf-fail.test', 'fail'],
    ['spf-soft.test', 'softfail'],
    ['spf-perm.test', 'permerror'],
  ] as const) {
    test(`${domain}: spf=${result} in Authentication-Results`, async () => {
      const from = `u@${domain}`;
      const r = await send(from, msg(from, `X-Marker: ${domain}\n`));
      assert.equal(r.code, 250, r.text);
      const text = await delivered(`X-Marker: ${domain}`);
      assert.match(authResults(text), new RegExp(`spf=${result} `));
      assert.match(text, new RegExp(`X-Mailyard-Policy: inbox; .*spf=${result}`));
    });
  }

  test('SPF temperror (SERVFAIL) gives 451, not an accept', async () => {
    const r = await send('u@spf-temp.test', msg('u@spf-temp.test'));
    assert.match(r.text, /^451 4\.7\.24 /);
  });

  for (const how of ['include', 'redirect'])
    test(`${how === 'include' ? 'an include:' : 'a redirect='} whose DNS fails is temperror: 451, not a DMARC p=reject refusal`, async () => {
      const from = `u@spf-${how}-temp.test`;
      const r = await send(from, msg(from));
      assert.match(r.text, /^451 4\.7\.24 /);
    });

  test('reject_spf_fail refuses an SPF fail', async () => {
    const rules = new PolicyRules(p.redis.redis, p.redis.prefix);
    await rules.set('smtpd_data_restrictions', ['check_authentication', 'reject_spf_fail']);
    const v = Number(await p.redis.redis.get('policy:version'));
    await waitFor(() => p.policy!.rulesVersion >= v);
    try {
      const r = await send('u@spf-fail.test', msg('u@spf-fail.test'));
      assert.match(r.text, /^550 5\.7\.23 Message rejected: SPF validation failed/);
      assert.equal((await send('u@spf-pass.test', msg('u@spf-pass.test'))).code, 250);
    } finally {
      await rules.set('smtpd_data_restrictions', ['check_authentication']);
    }
  });
});

describe('DKIM and DMARC', () => {
  test('a signature whose key lookup fails gives 451 under DMARC p=reject, not a refusal', async () => {
    const body = msg('news@signed-temp.test', 'X-Marker: signed-temp\n').replace(/\r?\n/g, '\r\n');
    const sig = await dkimSign(body, {
      canonicalization: 'relaxed/relaxed',
      signatureData: [{ signingDomain: 'signed-temp.test', selector: 'sel', privateKey }],
    } as never);
    const r = await send('news@signed-temp.test', sig.signatures + body);
    assert.match(r.text, /^451 4\.7\.5 /);
  });

  test('a correctly signed message gets dkim=pass and dmarc=pass', async () => {
    const body = msg('news@signed.test', 'X-Marker: signed\n').replace(/\r?\n/g, '\r\n');
    const sig = await dkimSign(body, {
      canonicalization: 'relaxed/relaxed',
      signatureData: [{ signingDomain: 'signed.test', selector: 'sel', privateKey }],
    } as never);
    const r = await send('news@signed.test', sig.signatures + body);
    // on a refusal, say why (the policy's recorded reasons for the ref in the reply)
    const ref = /\(ref (\w+)\)/.exec(r.text)?.[1];
    const why = ref ? await new PolicyRules(p.redis.redis, p.redis.prefix).explain(ref) : null;
    assert.equal(r.code, 250, `${r.text} ${JSON.stringify(why)}`);
    const ar = authResults(await delivered('X-Marker: signed'));
    assert.match(ar, /dkim=pass/);
    assert.match(ar, /header\.i=@signed\.test/);
    // SPF fails (signed.test allows nobody) but the aligned DKIM signature satisfies p=reject
    assert.match(ar, /dmarc=pass/);
  });

  test('a tampered signed message fails DKIM, and then DMARC p=reject refuses it', async () => {
    const body = msg('news@signed.test', 'X-Marker: tampered\n').replace(/\r?\n/g, '\r\n');
    const sig = await dkimSign(body, {
      signatureData: [{ signingDomain: 'signed.test', selector: 'sel', privateKey }],
    } as never);
    const r = await send('news@signed.test', sig.signatures + body.replace('hello', 'HELLO'));
    assert.match(
      r.text,
      /^550 5\.7\.1 Message rejected: DMARC policy of signed\.test says reject \(ref (\w+)\)/,
    );
    const ref = /\(ref (\w+)\)/.exec(r.text)![1]!;
    const why = await new PolicyRules(p.redis.redis, p.redis.prefix).explain(ref);
    assert.ok(
      why?.reasons.some((x) => x.check === 'dkim' && /fail|neutral/.test(x.result)),
      JSON.stringify(why),
    );
    assert.ok(why?.reasons.some((x) => x.check === 'dmarc' && x.result === 'fail'));
  });

  test('DMARC p=reject with failing SPF and no DKIM is refused at DATA', async () => {
    const r = await send('u@dmarc-reject.test', msg('u@dmarc-reject.test'));
    assert.match(r.text, /^550 5\.7\.1 Message rejected: DMARC policy of dmarc-reject\.test says reject/);
  });

  test('DMARC p=quarantine files into Junk', async () => {
    const r = await send('u@dmarc-quarantine.test', msg('u@dmarc-quarantine.test', 'X-Marker: dq\n'));
    assert.equal(r.code, 250);
    const text = await delivered('X-Marker: dq', 'Junk');
    assert.match(text, /X-Mailyard-Policy: junk; .*dmarc=fail \(p=quarantine\)/);
  });
});

describe('forged Authentication-Results', () => {
  test("ours are removed, other servers' kept", async () => {
    const forged =
      'Authentication-Results: mx.mailyard.test; spf=pass smtp.mailfrom=forged\n' +
      'Authentication-Results: other.example; dkim=pass\n' +
      'X-Mailyard-Policy: inbox; forged\nX-Marker: forged\n';
    const r = await send('u@spf-fail.test', msg('u@spf-fail.test', forged));
    assert.equal(r.code, 250);
    const text = await delivered('X-Marker: forged');
    assert.ok(!text.includes('smtp.mailfrom=forged'), 'forged header with our id kept');
    assert.ok(text.includes('Authentication-Results: other.example; dkim=pass'));
    assert.ok(!text.includes('X-Mailyard-Policy: inbox; forged'));
    assert.match(authResults(text), /spf=fail/);
  });
});

describe('greylisting and authenticated senders', () => {
  test('a domain whose mail was accepted with SPF pass is not greylisted while SPF passes', async () => {
    const rules = new PolicyRules(p.redis.redis, p.redis.prefix);
    await rules.set('smtpd_recipient_restrictions', ['check_policy_greylist']);
    const v = Number(await p.redis.redis.get('policy:version'));
    await waitFor(() => p.policy!.rulesVersion >= v);
    const rcpt = async (from: string) => {
      const c = await RawSmtp.connect(p.inbound.port, '127.0.0.1', { localAddress: '127.0.0.5' });
      try {
        await c.read();
        await c.cmd('EHLO client.example.net');
        await c.cmd(`MAIL FROM:<${from}>`);
        return await c.cmd('RCPT TO:<alice@example.test>');
      } finally {
        c.close();
      }
    };
    // spf-pass.test sent authenticated mail in the tests above
    assert.equal((await rcpt('another@spf-pass.test')).code, 250);
    // spf-soft.test never passed SPF: greylisted
    assert.equal((await rcpt('another@spf-soft.test')).code, 450);
  });
});
