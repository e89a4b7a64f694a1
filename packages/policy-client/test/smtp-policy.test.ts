import assert from 'node:assert/strict';
import { test } from 'node:test';
import { POLICY_VERSION, PolicyDecision, type PolicyDecisionInput } from '@mailyard/contracts';
import { PolicyVerdicts, applyVerdict, policyReject } from '@mailyard/policy-client';

const decision = (d: Omit<PolicyDecisionInput, 'v'>) => PolicyDecision.parse({ v: POLICY_VERSION, ...d });

test('policyReject: refusals become SmtpReject; at connect only 554 or 421', () => {
  const reject = decision({ action: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'no' } });
  const tempfail = decision({ action: 'tempfail', reply: { code: 450, enhanced: '4.7.1', text: 'later' } });
  assert.equal(policyReject(reject, 'rcpt')?.line, '550 5.7.1 no');
  assert.equal(policyReject(reject, 'rcpt')?.reason, 'policy_rcpt');
  assert.equal(policyReject(reject, 'connect')?.line, '554 5.7.1 no');
  assert.equal(policyReject(tempfail, 'connect')?.line, '421 4.7.1 later');
  // the client list answered at MAIL (submission, after login): the reply as decided
  assert.equal(policyReject(tempfail, 'connect', 'mail')?.line, '450 4.7.1 later');
  assert.equal(policyReject(reject, 'connect', 'mail')?.line, '550 5.7.1 no');
  assert.equal(policyReject(reject, 'connect', 'mail')?.reason, 'policy_connect');
  assert.equal(policyReject(decision({ action: 'continue' }), 'mail'), null);
  assert.equal(policyReject(decision({ action: 'quarantine' }), 'data'), null);
});

test('PolicyVerdicts: connect verdicts carry into every transaction, envelope verdicts do not', () => {
  const v = new PolicyVerdicts();
  const session = { envelope: {} };
  v.connected(session, decision({ action: 'quarantine' }));
  const first = v.tx(session);
  assert.equal(first.junkAll, true);
  applyVerdict(first, decision({ action: 'accept' }));
  applyVerdict(first, decision({ action: 'quarantine', junk: ['a@example.test'] }), 'a@example.test');
  assert.equal(v.tx(session), first);
  assert.deepEqual([...first.junk], ['a@example.test']);
  // smtp-server replaces the envelope object on RSET and after each message
  session.envelope = {};
  const second = v.tx(session);
  assert.notEqual(second, first);
  assert.equal(second.junkAll, true);
  assert.equal(second.accepted, false);
  assert.equal(second.junk.size, 0);
});
