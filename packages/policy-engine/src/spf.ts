import { spf as spfCheck } from 'mailauth';
import type { PolicyRequest } from '@mailyard/contracts';
import type { CheckEnv } from './check-context.js';

/** SPF for the envelope sender and this client, without the message (before DATA). */
export async function spfOf(env: CheckEnv, req: PolicyRequest): Promise<string | undefined> {
  if (!req.sender) return undefined;
  const r = await spfCheck({
    sender: req.sender,
    ip: req.client.ip.replace(/^::ffff:/i, ''),
    helo: req.client.helo || req.client.ip,
    mta: env.authservId,
    resolver: (name: string, type: string) => env.resolver.resolve(name, type),
  });
  return resultOf(r);
}

/** The `status.result` of a mailauth answer (spf, arc...). */
export function resultOf(r: unknown): string | undefined {
  if (!r || typeof r !== 'object') return undefined;
  const status = (r as { status?: { result?: unknown } }).status;
  return typeof status?.result === 'string' ? status.result : undefined;
}
