import { ENVELOPE_VERSION, type Envelope } from '@mailyard/contracts';
import { newQueueId } from '@mailyard/smtp-core';

/** The envelope mta-inbound would publish for a message from a remote sender. */
export const envelope = (recipients: string[], queueId = newQueueId()): Envelope => ({
  v: ENVELOPE_VERSION,
  queueId,
  mailFrom: 'sender@remote.test',
  recipients,
  client: { ip: '192.0.2.1', hostname: null, helo: 'remote.test', tls: null, user: null },
  receivedAt: new Date().toISOString(),
  attempts: 0,
  body: '7BIT',
  smtputf8: false,
  lastError: null,
});
