// What a sender may write into a message to pass for our verdict: the headers only our
// policy writes and results under our authserv-id; and a webmail draft's own fields.
// Whatever the policy did, none of them reaches a mailbox.
import assert from 'node:assert/strict';

/** A message from `from` to `to` claiming our verdicts under `authservId`, and one other server's results. */
export function forgedVerdicts(from: string, to: string, subject: string, authservId: string): string {
  return [
    `Authentication-Results: ${authservId}; dkim=pass header.d=bank.example; dmarc=pass header.from=bank.example`,
    // as a reader of the field reads it, a comment, quotes or the case change nothing
    `Authentication-Results: (verified) "${authservId.toUpperCase()}"; spf=pass smtp.mailfrom=bank.example`,
    'X-Mailyard-Virus-Scan: clean',
    'X-Mailyard-Policy: inbox; no checks fired',
    'x-mailyard-spam-scan:\r\n clean',
    'X-Mailyard-Bulk: no',
    // a webmail draft's own fields, sent as it stands by a desktop client
    'X-Mailyard-Draft: yes',
    'X-Mailyard-Origin: reply; uid=7; folder=SU5CT1g',
    'Authentication-Results: other.example; dkim=pass header.d=bank.example',
    `From: <${from}>`,
    `To: <${to}>`,
    `Subject: ${subject}`,
    '',
    'Please confirm your account.',
    '',
  ].join('\r\n');
}

/** Asserts that the header of `stored` has none of the forged verdicts, and kept the other server's results. */
export function assertNoForgedVerdicts(stored: string, authservId: string): void {
  const head = stored.slice(0, stored.indexOf('\r\n\r\n'));
  const id = authservId.replace(/\./g, '\\.');
  assert.doesNotMatch(head, new RegExp(`^Authentication-Results:.*${id}`, 'im'));
  assert.doesNotMatch(head, /^X-Mailyard-/im);
  // another server's results are not ours to remove
  assert.match(head, /^Authentication-Results: other\.example; dkim=pass/m);
  assert.match(head, /^Subject: /m);
}
