import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { loadConfig } from '@mailyard/config';
import type { PolicyRequestInput } from '@mailyard/contracts';
import { Directory } from '@mailyard/directory';
import { PolicyRules } from '@mailyard/policy-rules';
import type { Runtime } from '@mailyard/runtime';
import {
  createVhost,
  startPrivateRedis,
  testBootSettings,
  waitFor,
  type PrivateRedis,
  type TestVhost,
} from '@mailyard/testkit';
import { policySchema, type PolicyService } from '../src/index.js';
import { startPolicyService } from './service.js';

// The policy service's Redis (rules, access tables, per-user lists, greylisting, rate
// counters) on a redis-server the test kills: every answer is then a temporary failure,
// never "no rule", "no entry" or "allowed".
let redis: PrivateRedis;
let vhost: TestVhost;
let rt: Runtime;
let policy: PolicyService;

before(async () => {
  redis = await startPrivateRedis();
  vhost = await createVhost();
  const admin = new Redis(redis.port, '127.0.0.1', { keyPrefix: 'mailyard:' });
  await new Directory(admin).addDomain('example.test');
  const rules = new PolicyRules(admin, 'mailyard:');
  await rules.set('smtpd_sender_restrictions', [
    'check_sender_access senders',
    'check_rate client_messages 100/1m',
  ]);
  await rules.set('smtpd_relay_restrictions', ['reject_unauth_destination']);
  await rules.set('smtpd_recipient_restrictions', [
    'check_recipient_access rcpts',
    'check_user_lists',
    'check_policy_greylist',
  ]);
  await rules.accessSet('rcpts', 'address', 'blocked@example.test', 'REJECT no mail here');
  await rules.accessSet('senders', 'address', 'spammer@remote.test', 'REJECT go away');
  admin.disconnect();
  const cfg = loadConfig(policySchema, {
    env: {},
    overrides: {
      ...testBootSettings(vhost.url, redis.url),
      policy_delegation_enabled: false,
      greylist_auto_allow_fcrdns: false,
    },
  });
  ({ rt, policy } = await startPolicyService(cfg));
});
after(async () => {
  await policy?.stop();
  await rt?.close();
  await redis?.close();
  await vhost?.delete();
});

const ask = (stage: 'mail' | 'rcpt', sender: string, recipient: string | null = null) => {
  const req: Omit<PolicyRequestInput, 'v'> = {
    stage,
    origin: 'mta-inbound',
    sessionId: `s${Math.random()}`,
    client: { ip: '192.0.2.7', hostname: null, helo: 'client.remote.test' },
    sender,
    recipient,
    recipients: [],
  };
  return policy.decide(req);
};

test(
  'Redis down: access tables, lists, greylisting and rate limits answer 451 4.3.0',
  { timeout: 90_000 },
  async () => {
    // with Redis up the tables decide
    assert.equal((await ask('mail', 'spammer@remote.test')).reply?.code, 554);
    assert.equal((await ask('rcpt', 'a@remote.test', 'blocked@example.test')).reply?.code, 554);
    await redis.kill();
    try {
      // the service answers from its copy of the tables while it follows the rules' channel;
      // once it has seen the channel's connection go, every stage reads Redis again
      await waitFor(async () => (await ask('mail', 'spammer@remote.test')).action === 'tempfail', {
        what: 'the lost channel noticed',
      });
      const asks = [
        ['mail', 'spammer@remote.test', null],
        ['mail', 'friend@remote.test', null],
        ['rcpt', 'a@remote.test', 'blocked@example.test'],
        ['rcpt', 'a@remote.test', 'alice@example.test'],
        ['rcpt', 'a@remote.test', 'someone@elsewhere.test'],
      ] as const;
      // together: each waits out the same reconnect attempts
      const decisions = await Promise.all(asks.map(([stage, sender, rcpt]) => ask(stage, sender, rcpt)));
      decisions.forEach((d, i) => {
        assert.equal(d.action, 'tempfail', `${asks[i]!.join(' ')}: ${d.action}`);
        assert.equal(`${d.reply?.code} ${d.reply?.enhanced}`, '451 4.3.0');
      });
    } finally {
      await redis.start();
    }
  },
);
