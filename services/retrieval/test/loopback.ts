// Clients of a retrieval service on loopback, and what the kernel says of their connections.
import { readFile } from 'node:fs/promises';
import { ImapFlow } from 'imapflow';
import { freePort, type ProcessTestbed, type ServiceProcess } from '../../../test/processes.js';

const PASSWORD = 'correct horse battery staple';

/** ImapFlow over plain IMAP on 127.0.0.1 (the tests' PLAINTEXT_AUTH_NETWORKS), logged in as `user`. */
export function plainImapFlow(
  port: number,
  user: string,
  opts: { disableAutoIdle?: boolean } = {},
): ImapFlow {
  return new ImapFlow({
    host: '127.0.0.1',
    port,
    secure: false,
    doSTARTTLS: false,
    auth: { user, pass: PASSWORD },
    logger: false,
    ...opts,
  });
}

/**
 * The fields of the /proc/net/tcp row of the server's end of a loopback connection from
 * client port `clientPort` to `port` (4: tx_queue:rx_queue, 9: the socket's inode), or
 * null when there is none.
 */
export async function serverTcpRow(port: number, clientPort: number): Promise<string[] | null> {
  const hex = (n: number) => n.toString(16).toUpperCase().padStart(4, '0');
  const ends = `:${hex(port)} 0100007F:${hex(clientPort)} `;
  const row = (await readFile('/proc/net/tcp', 'latin1')).split('\n').find((l) => l.includes(ends));
  return row ? row.trim().split(/\s+/) : null;
}

/**
 * A retrieval instance of two workers (RETRIEVAL_WORKERS=2) on free ports, plain IMAP
 * logins allowed from loopback; `extra` adds to its environment.
 */
export async function startTwoWorkers(
  bed: ProcessTestbed,
  extra: Record<string, string> = {},
): Promise<{ svc: ServiceProcess; imap: number }> {
  const imap = await freePort();
  const svc = await bed.start('retrieval', {
    RETRIEVAL_WORKERS: '2',
    IMAP_PORT: String(imap),
    IMAPS_PORT: String(await freePort()),
    POP3_PORT: String(await freePort()),
    POP3S_PORT: String(await freePort()),
    PLAINTEXT_AUTH_NETWORKS: '127.0.0.1/32',
    ...extra,
  });
  return { svc, imap };
}
