import type { AddressInfo } from 'node:net';
import { MailyardSmtpServer, type ListenerOptions } from '../src/index.js';

/** What every listener test starts from: no PROXY peers, no greeting wait, no login needed, no log. */
const BASE: ListenerOptions = {
  proxyTrusted: [],
  hardErrorLimit: 20,
  greetingDelay: 0,
  logger: false,
  authOptional: true,
};

/** A listener on a free loopback port: BASE with `options` over it. */
export async function startListener(
  options: Partial<ListenerOptions>,
): Promise<{ server: MailyardSmtpServer; port: number }> {
  const server = new MailyardSmtpServer({ ...BASE, ...options });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.server.address() as AddressInfo).port };
}
