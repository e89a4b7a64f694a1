/** A policy request at RCPT, valid under the catalogue's contract. */
export const policyRequest = {
  v: 1 as const,
  stage: 'rcpt' as const,
  origin: 'mta-inbound' as const,
  sessionId: 'bus-test',
  client: { ip: '192.0.2.1' },
  recipient: 'alice@example.test',
};
