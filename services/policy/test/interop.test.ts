import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { PolicyRules } from '@mailyard/policy-rules';
import { RawSmtp, waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';

// The Postfix policy delegation protocol, spoken by a raw client as Postfix's smtpd does.

let p: Platform;

before(async () => {
  p = await startPlatform({
    inbound: { mynetworks: '127.0.0.1/32' },
    policy: { mynetworks: '127.0.0.1/32' },
    withDelivery: false,
    zone: { 'sender.test': { MX: [{ priority: 10, exchange: 'mx.sender.test' }] } },
  });
  await addAccount(p.directory, 'alice@example.test');
  const rules = new PolicyRules(p.redis.redis, p.redis.prefix);
  await rules.accessSet('sender_access', 'address', 'bad.test', 'REJECT not welcome');
  await rules.accessSet('recipient_access', 'address', 'alice+hold@example.test', 'HOLD');
  // the default set without greylisting (a Postfix in front usually greylists itself)
  await rules.remove('smtpd_recipient_restrictions', 'check_policy_greylist_suspicious');
  const v = Number(await p.redis.redis.get('policy:version'));
  await waitFor(() => p.policy!.rulesVersion >= v);
});
after(() => p.close());

/** One connection, several requests, as Postfix reuses its policy connections. */
async function delegate(requests: Record<string, string>[]): Promise<string[]> {
  const sock = connect({ port: p.policy!.delegationPort, host: '127.0.0.1' });
  let buf = '';
  sock.on('data', (d: Buffer) => (buf += d.toString()));
  await new Promise<void>((r) => sock.once('connect', () => r()));
  const answers: string[] = [];
  try {
    for (const req of requests) {
      sock.write(
        Object.entries(req)
          .map(([k, v]) => `${k}=${v}\n`)
          .join('') + '\n',
      );
      const block = await waitFor(() => {
        const i = buf.indexOf('\n\n');
        if (i === -1) return null;
        const b = buf.slice(0, i);
        buf = buf.slice(i + 2);
        return b;
      });
      answers.push(block);
    }
  } finally {
    sock.destroy();
  }
  return answers;
}

const base = {
  request: 'smtpd_access_policy',
  protocol_state: 'RCPT',
  protocol_name: 'ESMTP',
  client_address: '192.0.2.10',
  client_name: 'unknown',
  helo_name: 'mail.sender.test',
  queue_id: '',
  instance: '123.456.7',
  size: '0',
};

describe('policy delegation protocol', () => {
  test('answers DUNNO, REJECT with code and text, and HOLD on one connection', async () => {
    const [ok, rejected, held, relay] = await delegate([
      { ...base, sender: 'a@sender.test', recipient: 'alice@example.test' },
      { ...base, sender: 'a@bad.test', recipient: 'alice@example.test' },
      { ...base, sender: 'a@sender.test', recipient: 'alice+hold@example.test' },
      { ...base, sender: 'a@sender.test', recipient: 'victim@elsewhere.test' },
    ]);
    assert.equal(ok, 'action=DUNNO');
    assert.match(rejected!, /^action=554 5\.7\.1 <a@bad\.test>: Sender address rejected: not welcome/);
    assert.equal(held, 'action=HOLD');
    assert.match(relay!, /^action=554 5\.7\.1 <victim@elsewhere\.test>: Relay access denied/);
  });

  test('a malformed request gets DEFER_IF_PERMIT, and the connection keeps working', async () => {
    const [bad, good] = await delegate([
      { request: 'nonsense' },
      { ...base, sender: 'a@sender.test', recipient: 'alice@example.test' },
    ]);
    assert.match(bad!, /^action=DEFER_IF_PERMIT /);
    assert.equal(good, 'action=DUNNO');
  });
});

/** Waits until the policy service has loaded the rules as they are now. */
async function reloaded(): Promise<void> {
  const v = Number(await p.redis.redis.get('policy:version'));
  await waitFor(() => p.policy!.rulesVersion >= v, { what: 'policy rules reload' });
}

describe('policy delegation at DATA', () => {
  test('smtpd_data_restrictions answer DATA; the sender lists count a message once', async () => {
    const rules = new PolicyRules(p.redis.redis, p.redis.prefix);
    await rules.remove('smtpd_sender_restrictions', 'check_rate client_messages 200/1h');
    await rules.add('smtpd_sender_restrictions', 'check_rate client_messages 2/1h');
    await rules.add('smtpd_data_restrictions', 'check_client_access data_clients');
    await rules.accessSet('data_clients', 'client', '198.51.100.9', 'REJECT no mail from here');
    await reloaded();
    try {
      // a Postfix with check_policy_service in smtpd_recipient_restrictions and in
      // smtpd_data_restrictions asks at each RCPT and again at DATA
      const client = { ...base, client_address: '198.51.100.7', sender: 'a@sender.test' };
      const message = (id: string) => [
        { ...client, instance: id, recipient: 'alice@example.test' },
        {
          ...client,
          instance: id,
          protocol_state: 'DATA',
          recipient: 'alice@example.test',
          recipient_count: '1',
        },
      ];
      assert.deepEqual(await delegate([...message('m.1'), ...message('m.2')]), Array(4).fill('action=DUNNO'));
      // the third message is the one over two an hour
      const [third] = await delegate([{ ...client, instance: 'm.3', recipient: 'alice@example.test' }]);
      assert.match(third!, /^action=450 4\.7\.1 Error: too many messages from \[198\.51\.100\.7\]/);
      // several recipients: Postfix names none at DATA
      const [data] = await delegate([
        {
          ...base,
          client_address: '198.51.100.9',
          sender: 'a@sender.test',
          protocol_state: 'DATA',
          recipient: '',
          recipient_count: '2',
        },
      ]);
      assert.match(data!, /^action=554 5\.7\.1 .*no mail from here/);
    } finally {
      await rules.reset('smtpd_sender_restrictions');
      await rules.reset('smtpd_data_restrictions');
      await rules.accessDel('data_clients', 'client', '198.51.100.9');
      await reloaded();
    }
  });
});

describe('policy delegation: HOLD after the recipients', () => {
  test('a HOLD in smtpd_data_restrictions is answered HOLD at DATA and END-OF-MESSAGE', async () => {
    const rules = new PolicyRules(p.redis.redis, p.redis.prefix);
    await rules.add('smtpd_data_restrictions', 'check_client_access data_clients');
    await rules.accessSet('data_clients', 'client', '198.51.100.20', 'HOLD');
    await reloaded();
    try {
      const held = { ...base, client_address: '198.51.100.20', sender: 'a@sender.test' };
      const answers = await delegate([
        // several recipients: Postfix names none
        { ...held, protocol_state: 'DATA', recipient: '', recipient_count: '2' },
        { ...held, protocol_state: 'END-OF-MESSAGE', recipient: '', recipient_count: '2' },
        // the only one, named
        { ...held, protocol_state: 'END-OF-MESSAGE', recipient: 'alice@example.test', recipient_count: '1' },
      ]);
      assert.deepEqual(answers, Array(3).fill('action=HOLD'));
      // the one recipient's own allow list spares its copy, as on port 25
      await rules.userListAdd('alice@example.test', 'allow', 'friend@sender.test');
      // in force once its announcement on the rules' channel reaches the service
      const spared = () =>
        delegate([
          {
            ...held,
            sender: 'friend@sender.test',
            protocol_state: 'END-OF-MESSAGE',
            recipient: 'alice@example.test',
            recipient_count: '1',
          },
        ]);
      await waitFor(async () => (await spared())[0] === 'action=DUNNO', {
        what: "alice's allow list in force",
      });
    } finally {
      await rules.userListDel('alice@example.test', 'allow', 'friend@sender.test');
      await rules.reset('smtpd_data_restrictions');
      await rules.accessDel('data_clients', 'client', '198.51.100.20');
      await reloaded();
    }
  });
});

describe('policy delegation trickled', () => {
  test('a request sent a few bytes at a time and one sent after it at once are both answered', async () => {
    const sock = connect({ port: p.policy!.delegationPort, host: '127.0.0.1' });
    sock.setNoDelay(true);
    let buf = '';
    sock.on('data', (d: Buffer) => (buf += d.toString()));
    await new Promise<void>((r) => sock.once('connect', () => r()));
    try {
      const request = (instance: string) =>
        Object.entries({
          ...base,
          instance,
          sender: 'a@sender.test',
          recipient: 'alice@example.test',
          // a long attribute, as a client certificate's subject can be
          ccert_subject: 'x'.repeat(16 * 1024),
        })
          .map(([k, v]) => `${k}=${v}\r\n`)
          .join('') + '\r\n';
      const trickled = request('t.1');
      for (let at = 0; at < trickled.length; at += 3)
        await new Promise<void>((r, j) => sock.write(trickled.slice(at, at + 3), (e) => (e ? j(e) : r())));
      sock.write(request('t.2'));
      const answers = await waitFor(
        () => {
          const got = buf.split('\n\n').slice(0, -1);
          return got.length >= 2 ? got : null;
        },
        { timeoutMs: 20_000, what: 'two answers' },
      );
      assert.deepEqual(answers, ['action=DUNNO', 'action=DUNNO']);
    } finally {
      sock.destroy();
    }
  });
});

describe('policy delegation under pipelining', () => {
  test('two thousand requests sent at once are all answered, in order, none refused as too large', async () => {
    const sock = connect({ port: p.policy!.delegationPort, host: '127.0.0.1' });
    let buf = '';
    sock.on('data', (d: Buffer) => (buf += d.toString()));
    await new Promise<void>((r) => sock.once('connect', () => r()));
    try {
      const request = (i: number) =>
        Object.entries({
          ...base,
          // from many clients: the default rate limits are per client
          client_address: `192.0.2.${i % 250}`,
          sender: 'a@sender.test',
          recipient: 'alice@example.test',
          instance: `p.${i}`,
        })
          .map(([k, v]) => `${k}=${v}\n`)
          .join('') + '\n';
      // over 64 KiB in one write: the server reads a few ahead of its answers, not all at once
      const all = Array.from({ length: 2000 }, (_, i) => (i % 2 ? request(i) : 'request=nonsense\n\n')).join(
        '',
      );
      assert.ok(all.length > 3 * 64 * 1024);
      sock.write(all);
      const answers = await waitFor(
        () => {
          const got = buf.split('\n\n').slice(0, -1);
          return got.length >= 2000 ? got : null;
        },
        { timeoutMs: 60_000, what: 'two thousand answers' },
      );
      assert.equal(answers.length, 2000);
      answers.forEach((a, i) =>
        assert.match(a, i % 2 ? /^action=DUNNO$/ : /^action=DEFER_IF_PERMIT request=/),
      );
    } finally {
      sock.destroy();
    }
  });
});

describe('policy service unavailable', () => {
  test('no answer in time: 421 4.3.5 at connect, never an accept; after 3 in a row, at once', async () => {
    const q = await startPlatform({
      inbound: { mynetworks: '127.0.0.1/32', policy_enabled: true, policy_timeout: '1s' },
      withDelivery: false,
    });
    try {
      const greeting = async () => {
        const started = Date.now();
        const c = await RawSmtp.connect(q.inbound.port, '127.0.0.1', { localAddress: '127.0.0.5' });
        const r = await c.read(5000);
        c.close();
        return { text: r.text, ms: Date.now() - started };
      };
      // Postfix's smtpd_policy_service_default_action; at connect 451 becomes 421
      for (let i = 0; i < 3; i++) {
        const r = await greeting();
        assert.match(r.text, /^421 4\.3\.5 Server configuration problem/);
        assert.ok(r.ms >= 900, `waited for the policy timeout (${r.ms} ms)`);
      }
      const r = await greeting();
      assert.match(r.text, /^421 4\.3\.5 Server configuration problem/);
      assert.ok(r.ms < 900, `the circuit is open: no wait (${r.ms} ms)`);
    } finally {
      await q.close();
    }
  });

  test('SMTPD_POLICY_SERVICE_DEFAULT_ACTION=DUNNO lets the session go on without policy', async () => {
    const q = await startPlatform({
      inbound: {
        mynetworks: '127.0.0.1/32',
        policy_enabled: true,
        policy_timeout: '300ms',
        policy_data_timeout: '300ms',
        smtpd_policy_service_default_action: 'DUNNO',
      },
      withDelivery: false,
    });
    try {
      await addAccount(q.directory, 'alice@example.test');
      const c = await RawSmtp.connect(q.inbound.port, '127.0.0.1', { localAddress: '127.0.0.5' });
      assert.equal((await c.read(5000)).code, 220);
      await c.cmd('EHLO client.example.net');
      assert.equal((await c.cmd('MAIL FROM:<a@sender.test>')).code, 250);
      const rc = await c.cmd('RCPT TO:<alice@example.test>');
      assert.equal(rc.code, 250);
      assert.equal((await c.cmd('DATA')).code, 354);
      c.write('Subject: x\r\n\r\nhi\r\n.\r\n');
      const r = await c.read(5000);
      assert.equal(r.code, 250, r.text);
      c.close();
    } finally {
      await q.close();
    }
  });
});
