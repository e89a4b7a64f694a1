// Real mail clients logging in to the testbed's retrieval, for the account tests.
import { ImapFlow } from 'imapflow';
import { HOST, type WebmailTestbed } from './webmail-harness.js';

/** Logs in over IMAPS with imapflow: true when it got in, false when the login was refused. */
export async function imapLogin(t: WebmailTestbed, user: string, pass: string): Promise<boolean> {
  const c = new ImapFlow({
    host: '127.0.0.1',
    port: t.retrieval.ports.imaps,
    secure: true,
    tls: { rejectUnauthorized: false, servername: HOST },
    auth: { user, pass },
    logger: false,
  });
  c.on('error', () => undefined);
  try {
    await c.connect();
    await c.logout();
    return true;
  } catch (err) {
    if ((err as { authenticationFailed?: boolean }).authenticationFailed) return false;
    throw err;
  }
}
