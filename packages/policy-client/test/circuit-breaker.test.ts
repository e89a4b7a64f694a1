import assert from 'node:assert/strict';
import { test } from 'node:test';
import { z } from 'zod';
import { loadConfig } from '@mailyard/config';
import { CircuitBreaker, parseDefaultAction, policyClientSchema, type BreakerState } from '../src/index.js';

test('smtpd_policy_service_default_action: Postfix syntax, default 451 4.3.5', () => {
  assert.deepEqual(parseDefaultAction('451 4.3.5 Server configuration problem'), {
    action: 'tempfail',
    reply: { code: 451, enhanced: '4.3.5', text: 'Server configuration problem' },
  });
  assert.deepEqual(parseDefaultAction('dunno'), { action: 'continue' });
  assert.deepEqual(parseDefaultAction('554 5.7.1 No policy, no mail'), {
    action: 'reject',
    reply: { code: 554, enhanced: '5.7.1', text: 'No policy, no mail' },
  });
  // as in a Postfix access table, X.7.1 when the reply names no enhanced status
  assert.deepEqual(parseDefaultAction('450 try later'), {
    action: 'tempfail',
    reply: { code: 450, enhanced: '4.7.1', text: 'try later' },
  });
  for (const bad of ['OK', '250 2.0.0 fine', '451 5.3.5 class mismatch', 'DEFER_IF_PERMIT', ''])
    assert.equal(parseDefaultAction(bad), null, bad);

  const schema = z.object(policyClientSchema);
  assert.deepEqual(loadConfig(schema, { env: {} }).smtpd_policy_service_default_action, {
    action: 'tempfail',
    reply: { code: 451, enhanced: '4.3.5', text: 'Server configuration problem' },
  });
  assert.throws(
    () => loadConfig(schema, { env: { SMTPD_POLICY_SERVICE_DEFAULT_ACTION: 'OK' } }),
    /SMTPD_POLICY_SERVICE_DEFAULT_ACTION: expected DUNNO or a reply/,
  );
});

test('the breaker opens after N failures in a row, probes once after the open time', () => {
  let now = 0;
  const states: BreakerState[] = [];
  const b = new CircuitBreaker({
    threshold: 3,
    openMs: 5000,
    now: () => now,
    onChange: (s) => states.push(s),
  });
  for (let i = 0; i < 2; i++) {
    assert.equal(b.allow(), true);
    b.failure();
  }
  b.allow();
  b.success(); // an answer in between: the count starts again
  for (let i = 0; i < 3; i++) {
    assert.equal(b.allow(), true);
    b.failure();
  }
  assert.equal(b.state, 'open');
  now += 4999;
  assert.equal(b.allow(), false, 'open: answered without asking');
  now += 1;
  assert.equal(b.allow(), true, 'the probe');
  assert.equal(b.state, 'half-open');
  assert.equal(b.allow(), false, 'one probe at a time');
  b.failure();
  assert.equal(b.state, 'open', 'a failed probe opens it again');
  now += 5000;
  assert.equal(b.allow(), true);
  b.success();
  assert.equal(b.state, 'closed');
  assert.equal(b.allow(), true);
  assert.equal(b.allow(), true);
  assert.deepEqual(states, ['open', 'half-open', 'open', 'half-open', 'closed']);
});
