import { RoutingKeys, type Envelope, type MailRoutingKey } from '@mailyard/contracts';
import { domainOf } from '@mailyard/smtp-core';
import { buildDsn, type DsnInput } from './dsn.js';

/** What returning a DSN needs: the bus to publish it, the directory to say where it goes. */
export interface ReturnRoute {
  bus: { publishMail(routingKey: MailRoutingKey, body: Buffer, envelope: Envelope): Promise<void> };
  directory: { isLocalDomain(domain: string): Promise<boolean> };
}

/**
 * Builds a DSN for the original sender and publishes it: through `delivery` when the
 * sender's domain is ours, through `outbound` otherwise. The DSN goes out with the null
 * sender and the null sender gets none (RFC 5321 §4.5.5: a bounce never bounces): null
 * then, and nothing is published. Resolves once the broker confirmed it.
 */
export async function returnToSender(
  input: DsnInput,
  route: ReturnRoute,
): Promise<{ envelope: Envelope; via: MailRoutingKey } | null> {
  if (input.original.mailFrom === '') return null;
  const dsn = buildDsn(input);
  const local = await route.directory.isLocalDomain(domainOf(input.original.mailFrom));
  const via = local ? RoutingKeys.delivery : RoutingKeys.outbound;
  await route.bus.publishMail(via, dsn.message, dsn.envelope);
  return { envelope: dsn.envelope, via };
}
