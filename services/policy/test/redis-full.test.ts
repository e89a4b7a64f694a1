import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { loadConfig } from '@mailyard/config';
import { PolicyRpc, type PolicyRequestInput } from '@mailyard/contracts';
import { Directory } from '@mailyard/directory';
import { PolicyKeys, PolicyRules } from '@mailyard/policy-rules';
import { createRuntime, type Runtime } from '@mailyard/runtime';
import {
  createVhost,
  startDnsServer,
  startPrivateRedis,
  testBootSettings,
  waitFor,
  type PrivateRedis,
  type TestDnsServer,
  type TestVhost,
} from '@mailyard/testkit';
import { buildPolicy, defaultDeps, policySchema, type PolicyService } from '../src/index.js';
import { startPolicyService } from './service.js';

// The policy service's Redis at its maxmemory (noeviction): what only helps later
// decisions and cannot be written is let go, and the message decided as it would be.
let redis: PrivateRedis;
let dns: TestDnsServer;
let vhost: TestVhost;
let rt: Runtime;
let policy: PolicyService;
let cfg: Parameters<typeof startPolicyService>[0];

before(async () => {
  redis = await startPrivateRedis();
  dns = await startDnsServer({ 'spf-pass.test': { TXT: ['v=spf1 ip4:192.0.2.7 -all'] } });
  vhost = await createVhost();
  const admin = new Redis(redis.port, '127.0.0.1', { keyPrefix: 'mailyard:' });
  await new Directory(admin).addDomain('example.test');
  const rules = new PolicyRules(admin, 'mailyard:');
  await rules.set('smtpd_data_restrictions', ['check_authentication']);
  await rules.set('smtpd_recipient_restrictions', ['check_policy_greylist']);
  admin.disconnect();
  cfg = loadConfig(policySchema, {
    env: {},
    overrides: {
      ...testBootSettings(vhost.url, redis.url),
      dns_servers: dns.address,
      policy_delegation_enabled: false,
      greylist_auto_allow_authenticated: true,
      greylist_auto_allow_fcrdns: false,
      greylist_delay: '1s',
    },
  });
  ({ rt, policy } = await startPolicyService(cfg));
});
after(async () => {
  await policy?.stop();
  await rt?.close();
  await redis?.close();
  await dns?.close();
  await vhost?.delete();
});

test(
  'Redis full: a message whose sender passes SPF is accepted, not deferred for the greylist note',
  { timeout: 60_000 },
  async () => {
    const message = Buffer.from(
      'From: <bob@spf-pass.test>\r\nTo: <alice@example.test>\r\nSubject: hi\r\n\r\nhello\r\n',
    );
    const req: Omit<PolicyRequestInput, 'v'> = {
      stage: 'data',
      origin: 'mta-inbound',
      sessionId: `s${Math.random()}`,
      queueId: 'QFULL1',
      client: { ip: '192.0.2.7', hostname: null, helo: 'mx.spf-pass.test' },
      sender: 'bob@spf-pass.test',
      recipients: ['alice@example.test'],
      size: message.length,
    };
    await waitFor(() => policy.rulesVersion > 0, { what: 'the rules loaded' });
    const decision = await redis.whileFull(() => policy.decide(req, message));
    assert.equal(decision.action, 'continue', `${decision.action}: ${decision.reply?.text}`);
    // with room again the note is written, as before
    await policy.decide({ ...req, sessionId: `s${Math.random()}` }, message);
    const check = redis.client({ keyPrefix: 'mailyard:' });
    assert.equal(await check.exists(PolicyKeys.greylistAuthenticated('spf-pass.test')), 1);
  },
);

test(
  'Redis full: a sender greylisted before gets through on its retry; a new one is greylisted',
  { timeout: 60_000 },
  async () => {
    await waitFor(() => policy.rulesVersion > 0, { what: 'the rules loaded' });
    const rcpt = (sender: string) =>
      policy.decide({
        stage: 'rcpt',
        origin: 'mta-inbound',
        sessionId: `s${Math.random()}`,
        client: { ip: '192.0.2.9', hostname: null, helo: 'mx.remote.test' },
        sender,
        recipient: 'alice@example.test',
        recipients: [],
      });
    const first = await rcpt('early@remote.test');
    const greylisted = `${first.reply?.code} ${first.reply?.enhanced}`;
    assert.equal(first.action, 'tempfail');
    assert.match(greylisted, /^45\d 4\.7\.1$/, 'greylisted');
    const retryAt = Date.now() + 1100;
    await waitFor(() => Date.now() > retryAt, { what: 'the greylisting delay over' });
    await redis.whileFull(async () => {
      const retry = await rcpt('early@remote.test');
      assert.equal(retry.action, 'continue', `the retry: ${retry.reply?.text}`);
      const fresh = await rcpt('new@remote.test');
      assert.equal(
        `${fresh.reply?.code} ${fresh.reply?.enhanced}`,
        greylisted,
        `a new sender: ${fresh.reply?.text}`,
      );
    });
    // with room again the new sender's triplet is stored, and its retry counted from there
    const later = await rcpt('new@remote.test');
    assert.equal(`${later.reply?.code} ${later.reply?.enhanced}`, greylisted);
    const laterAt = Date.now() + 1100;
    await waitFor(() => Date.now() > laterAt, { what: 'the greylisting delay over' });
    assert.equal((await rcpt('new@remote.test')).action, 'continue', 'its retry gets through');
  },
);

test(
  'Redis full: an instance restarted then starts, and answers the intakes',
  { timeout: 120_000 },
  async () => {
    // the operator restarts the policy service during the incident
    await policy.stop();
    await rt.close();
    const check = redis.client({ keyPrefix: 'mailyard:' });
    assert.equal(await check.hlen(PolicyKeys.engineConfig), 0, 'the stopped instance took its settings back');
    const answer = await redis.whileFull(async () => {
      // built here, not by startPolicyService: a start that fails still leaves it to close
      rt = await createRuntime('policy', cfg);
      policy = buildPolicy(cfg, defaultDeps(cfg, rt));
      await rt.bus.waitConnected();
      await policy.start();
      return rt.bus.call(
        PolicyRpc,
        {
          v: 1,
          stage: 'rcpt',
          origin: 'mta-inbound',
          sessionId: `s${Math.random()}`,
          client: { ip: '192.0.2.11', hostname: null, helo: 'mx.remote.test' },
          sender: 'someone@remote.test',
          recipient: 'alice@example.test',
          recipients: [],
        },
        { timeoutMs: 30_000 },
      );
    });
    // decided by the rules (the greylist), not deferred for the backend
    assert.equal(`${answer.reply?.code} ${answer.reply?.enhanced}`, '450 4.7.1', answer.reply?.text);
    // its settings are published for the intakes to decide cheap stages with
    assert.equal(await check.hlen(PolicyKeys.engineConfig), 1);
  },
);
