import type { PolicyReply } from '@mailyard/contracts';
import { forwardConfirmedReverse, isNotFound, reverseName, type MailResolver } from '@mailyard/dns';
import { listAnswerMatches, type ListAnswerFilter, type PolicyReplies } from '@mailyard/policy-rules';
import { DUNNO, note, refuse, type CheckContext, type CheckEnv, type Verdict } from './check-context.js';
import type { PolicyMetrics } from './metrics.js';

/** A DNS lookup failed in a way that says nothing about the name: timeout, SERVFAIL, garbage. */
export class DnsTempError extends Error {
  override readonly name = 'DnsTempError';
}

/** Wraps the resolver so every lookup is timed and counted; temporary failures become DnsTempError. */
export function measuredResolver(resolver: MailResolver, metrics: PolicyMetrics): MailResolver {
  const wrap =
    <A extends unknown[], T>(type: string, fn: (...a: A) => Promise<T>) =>
    async (...a: A): Promise<T> => {
      const end = metrics.dnsLatency.startTimer({ type });
      try {
        return await fn(...a);
      } catch (err) {
        if (isNotFound(err)) throw err;
        metrics.dnsFailures.inc({ type });
        const e = new DnsTempError(
          `${type} lookup failed: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
        );
        (e as NodeJS.ErrnoException).code = (err as NodeJS.ErrnoException).code ?? 'ESERVFAIL';
        throw e;
      } finally {
        end();
      }
    };
  return {
    raw: resolver.raw,
    resolveMx: wrap('MX', (n: string) => resolver.resolveMx(n)),
    resolve4: wrap('A', (n: string) => resolver.resolve4(n)),
    resolve6: wrap('AAAA', (n: string) => resolver.resolve6(n)),
    resolveTxt: wrap('TXT', (n: string) => resolver.resolveTxt(n)),
    reverse: wrap('PTR', (ip: string) => resolver.reverse(ip)),
    // mailauth's lookups: its own code reads ENOTFOUND/ENODATA, so errors pass unchanged
    resolve: async (name: string, type: string) => {
      const end = metrics.dnsLatency.startTimer({ type });
      try {
        return await resolver.resolve(name, type);
      } catch (err) {
        if (!isNotFound(err)) metrics.dnsFailures.inc({ type });
        throw err;
      } finally {
        end();
      }
    },
  };
}

export type Lookup<T> =
  | { kind: 'found'; value: T }
  | { kind: 'none' }
  /** `refused`: a DNS list said it will not answer us (127.255.255.x), not that it failed. */
  | { kind: 'temp'; error: string; refused?: true };

async function classify<T>(p: Promise<T>, empty: (v: T) => boolean): Promise<Lookup<T>> {
  try {
    const v = await p;
    return empty(v) ? { kind: 'none' } : { kind: 'found', value: v };
  } catch (err) {
    if (isNotFound(err)) return { kind: 'none' };
    return { kind: 'temp', error: String((err as Error).message ?? err) };
  }
}

export async function lookupPtr(resolver: MailResolver, ip: string): Promise<Lookup<string[]>> {
  return classify(resolver.reverse(ip), (v) => v.length === 0);
}

export async function lookupFcrdns(
  resolver: MailResolver,
  ip: string,
): Promise<Lookup<{ ptr: string[]; confirmed: string | null }>> {
  return classify(forwardConfirmedReverse(resolver, ip), () => false);
}

/**
 * Whether a sender domain can receive mail: an MX, else an A or AAAA (RFC 5321 §5.1).
 * A null MX (RFC 7505) counts as "cannot".
 */
export async function domainResolves(resolver: MailResolver, domain: string): Promise<Lookup<true>> {
  const [mx, a, aaaa] = await Promise.all([
    classify(resolver.resolveMx(domain), (v) => v.length === 0),
    classify(resolver.resolve4(domain), (v) => v.length === 0),
    classify(resolver.resolve6(domain), (v) => v.length === 0),
  ]);
  if (mx.kind === 'found') {
    const real = mx.value.filter((m) => m.exchange !== '' && m.exchange !== '.');
    return real.length ? { kind: 'found', value: true } : { kind: 'none' };
  }
  if (a.kind === 'found' || aaaa.kind === 'found') return { kind: 'found', value: true };
  const temp = [mx, a, aaaa].find((l) => l.kind === 'temp');
  if (temp && temp.kind === 'temp') return temp;
  return { kind: 'none' };
}

/** The DNSBL query name for an IP: reversed octets (or nibbles) under the zone. */
export function dnsblName(ip: string, zone: string): string | null {
  return reverseName(ip, zone);
}

/**
 * What a list means by answering 127.255.255.x: it refuses the query rather than answering
 * it (Spamhaus's return codes; others use the same block).
 */
const REFUSALS: Record<string, string> = {
  '127.255.255.252': 'typing error in the list name',
  '127.255.255.254': 'query through a public or open resolver',
  '127.255.255.255': 'too many queries',
};

/**
 * A DNSBL answer: the 127.0.0.x codes, or none. Answers outside 127/8 are garbage, and a
 * 127.255.255.x answer is the list refusing the query (asked through a public resolver,
 * over its quota), so neither says whether the name is listed: the lookup failed (temp),
 * as rspamd ignores these codes. The refusal is logged naming the list and the code,
 * since only the admin can end it (their own resolver, a subscription).
 */
export async function dnsblLookup(
  env: Pick<CheckEnv, 'resolver' | 'logger'>,
  zone: string,
  name: string,
): Promise<Lookup<string[]>> {
  const r = await classify(env.resolver.resolve4(name), (v) => v.length === 0);
  if (r.kind !== 'found') return r;
  const refused = r.value.filter((a) => a.startsWith('127.255.255.'));
  if (refused.length) {
    const why = refused.map((a) => `${a}${REFUSALS[a] ? `: ${REFUSALS[a]}` : ''}`).join(', ');
    env.logger.warn(
      { zone, answer: refused.join(',') },
      `DNS list ${zone} refused the query (${why}): not a listing, the lookup counts as failed until the list answers (ask it through a resolver of your own)`,
    );
    return { kind: 'temp', error: `the list refused the query (${why})`, refused: true };
  }
  if (!r.value.every((a) => a.startsWith('127.')))
    return { kind: 'temp', error: `DNSBL answered outside 127.0.0.0/8: ${r.value.join(',')}` };
  return r;
}

/** Forward-confirmed reverse DNS; a failed lookup counts as not confirmed. */
export async function hasFcrdns(resolver: MailResolver, ip: string): Promise<boolean> {
  const f = await lookupFcrdns(resolver, ip);
  return f.kind === 'found' && f.value.confirmed !== null;
}

/**
 * A lookup about the client as a verdict: found passes, a temporary failure defers
 * (never an accept), nothing found refuses with `onNone`.
 */
export function clientDnsVerdict(
  ctx: CheckContext,
  check: string,
  l: Lookup<unknown>,
  onNone: () => PolicyReply,
  onTemp: (ip: string) => PolicyReply,
): Verdict {
  if (l.kind === 'found') return DUNNO;
  if (l.kind === 'temp') {
    note(ctx, check, 'temperror', l.error);
    return refuse(onTemp(ctx.req.client.ip));
  }
  note(ctx, check, 'reject');
  return refuse(onNone());
}

/**
 * A DNSBL/RHSBL entry as a verdict: listed (with an answer the filter takes, if any)
 * refuses naming the zone and the codes; a failed or refused lookup defers.
 */
export async function dnsListVerdict(
  ctx: CheckContext,
  check: string,
  list: { zone: string; answer: ListAnswerFilter | null },
  name: string | null,
  subject: string,
  reply: Pick<PolicyReplies, 'dnsblListed' | 'dnsblTempFail'>,
): Promise<Verdict> {
  if (!name) return DUNNO;
  const { zone, answer } = list;
  const l = await dnsblLookup(ctx.env, zone, name);
  if (l.kind === 'none') return DUNNO;
  if (l.kind === 'temp') {
    note(ctx, check, 'temperror', `${zone}: ${l.error}`);
    return refuse(reply.dnsblTempFail(zone));
  }
  const codes = answer ? l.value.filter((c) => listAnswerMatches(answer, c)) : l.value;
  if (!codes.length) return DUNNO;
  note(ctx, check, 'listed', `${zone}=${codes.join(',')}`);
  return refuse(reply.dnsblListed(subject, zone, codes));
}
