import { isIP } from 'node:net';
import { z } from 'zod';

// Field types shared by every service schema. Values arrive as strings from the
// environment or as YAML scalars/lists from the file, so each field accepts both.

const splitList = (v: unknown): unknown =>
  typeof v === 'string'
    ? v
        .split(/[\s,]+/)
        .map((s) => s.trim())
        .filter(Boolean)
    : v;

/**
 * A number as the environment or a YAML file gives it: a number, or a string of decimal
 * digits (a sign or a fraction is read too, so the checks after can say what is wrong).
 * Nothing else is a number: z.coerce read a blank or empty value as 0, true as 1 and
 * 0x19 as 25, and a port of 0 or a cache of 0 changes what a service does.
 */
const wholeNumber = <T extends z.ZodType>(message: string, checks: (n: z.ZodNumber) => T) =>
  z.preprocess(
    (v) => (typeof v === 'string' && /^\s*[+-]?\d+(\.\d+)?\s*$/.test(v) ? Number(v) : v),
    checks(z.number({ message })),
  );

const portNumber = () =>
  wholeNumber('expected a port number', (n) =>
    n
      .int('expected a whole port number')
      .min(0, 'expected a port number 0-65535')
      .max(65535, 'expected a port number 0-65535'),
  );

export const port = (def: number) => portNumber().default(def);
/** A port that is not opened unless set. */
export const optionalPort = () => portNumber().optional();

export const positiveInt = (def: number) =>
  wholeNumber('expected a number', (n) =>
    n.int('expected a whole number').positive('expected a number above 0'),
  ).default(def);

export const nonNegativeInt = (def: number) =>
  wholeNumber('expected a number', (n) =>
    n.int('expected a whole number').min(0, 'expected 0 or more'),
  ).default(def);

export const bool = (def: boolean) =>
  z
    .union([
      z.boolean(),
      z.enum(['yes', 'no', 'true', 'false', '1', '0', 'on', 'off'], { message: 'expected yes or no' }),
    ])
    .transform((v) => v === true || v === 'yes' || v === 'true' || v === '1' || v === 'on')
    .default(def);

export const url = (protocols: string[], def: string) =>
  z
    .string()
    .refine(
      (v) => {
        try {
          return protocols.includes(new URL(v).protocol.replace(/:$/, ''));
        } catch {
          return false;
        }
      },
      { message: `expected a URL (${protocols.map((p) => p + '://').join(' or ')})` },
    )
    .default(def);

export const stringList = (def: string[]) => z.preprocess(splitList, z.array(z.string())).default(def);

const cidrArray = z.preprocess(
  splitList,
  z.array(
    z.string().refine((v) => parseCidr(v) !== null, {
      message: 'expected IP networks like 127.0.0.0/8 or ::1/128',
    }),
  ),
);
/** A list of IP networks in CIDR notation (a bare address means a single host). */
export const cidrList = (def: string[]) => cidrArray.default(def);
/** As cidrList, but undefined when not set, for a default taken from another key (Postfix's `$mynetworks`). */
export const optionalCidrList = () => cidrArray.optional();

/**
 * DNS servers: IP addresses, each with an optional port (`192.0.2.53`, `192.0.2.53:5353`,
 * `::1`, `[::1]:5353`), as node:dns's setServers takes them; a name cannot be asked for
 * the address of the server that would answer it.
 */
export const dnsServerList = (def: string[]) =>
  z
    .preprocess(
      splitList,
      z.array(
        z.string().refine((v) => isIP(parseHostPort(v, 53)?.host ?? '') !== 0, {
          message: 'expected IP addresses with an optional port, e.g. 127.0.0.1:53 or [::1]:53',
        }),
      ),
    )
    .default(def);

/** host:port pairs. */
export const hostPortList = (def: string[]) =>
  z
    .preprocess(
      splitList,
      z.array(
        z
          .string()
          .refine((v) => parseHostPort(v, 53) !== null, { message: 'expected host:port, e.g. 127.0.0.1:53' }),
      ),
    )
    .default(def);

const SIZE_RE = /^(\d+)\s*([kmg]i?b?|b)?$/i;
const sizeText = z.union([z.number(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return v;
  const m = SIZE_RE.exec(v.trim());
  if (!m) {
    ctx.addIssue({ code: 'custom', message: 'expected a size such as 10240, 512k or 25M' });
    return z.NEVER;
  }
  const unit = (m[2] ?? '').toLowerCase()[0];
  const mult = unit === 'k' ? 1024 : unit === 'm' ? 1024 ** 2 : unit === 'g' ? 1024 ** 3 : 1;
  return Number(m[1]) * mult;
});
/** A size in bytes; accepts plain numbers and 10k/25M/1G suffixes (binary multiples). */
export const bytes = (def: number) =>
  sizeText.pipe(z.number().int().positive('expected a size above 0')).default(def);
/** A size limit where 0 means "no limit" (quotas): otherwise as `bytes`. */
export const bytesOrUnlimited = (def: number) =>
  sizeText.pipe(z.number().int().nonnegative('expected a size, or 0 for no limit')).default(def);

const DURATION_RE = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?$/;
const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};
/** Milliseconds of a Postfix-style duration (300s, 5m, 4h, 5d; a bare number is seconds), or null. */
function parseDuration(text: string): number | null {
  const m = DURATION_RE.exec(text.trim());
  if (!m) return null;
  return Math.round(Number(m[1]) * (DURATION_UNITS[m[2] ?? 's'] ?? 1000));
}

/** A duration in milliseconds; accepts Postfix-style 300s, 5m, 4h, 5d (bare numbers are seconds). */
export const duration = (def: string) =>
  z
    .union([z.number(), z.string()])
    .transform((v, ctx) => {
      const ms = parseDuration(String(v));
      if (ms === null) {
        ctx.addIssue({ code: 'custom', message: 'expected a duration such as 300s, 5m, 4h or 5d' });
        return z.NEVER;
      }
      return ms;
    })
    .prefault(def);

/**
 * A retry schedule: a comma/space separated list of durations above 0 (`1m,5m,15m`), in
 * milliseconds.
 */
export const durationList = (def: number[]) =>
  z
    .union([z.string(), z.array(z.union([z.string(), z.number()]))])
    .transform((v, ctx) => {
      const items = typeof v === 'string' ? v.split(/[\s,]+/).filter(Boolean) : v.map(String);
      const out: number[] = [];
      for (const item of items) {
        const ms = parseDuration(item);
        if (ms === null) {
          ctx.addIssue({ code: 'custom', message: `expected durations such as 1m,5m,4h, got "${item}"` });
          return z.NEVER;
        }
        out.push(ms);
      }
      if (!out.length || out.some((n) => n <= 0)) {
        ctx.addIssue({ code: 'custom', message: 'expected at least one delay above 0' });
        return z.NEVER;
      }
      return out;
    })
    .default(def);

/**
 * The longest wait of a timeout or an interval. A Node.js timer holds at most 2^31-1 ms
 * (about 24.8 days) and fires at once when given more: IMAP_AUTOLOGOUT=30d logged every
 * client out as it connected. 24 days says the limit in the unit an operator writes.
 */
const TIMER_LIMIT_MS = 24 * 86_400_000;
const TIMER_LIMIT = 'expected a duration up to 24d';

/** A duration a timer waits (a timeout, an interval; 0 where the key says it turns it off), up to 24 days. */
export const timerDuration = (def: string) => duration(def).pipe(z.number().max(TIMER_LIMIT_MS, TIMER_LIMIT));

/** A timeout that must not be off: above 0, up to 24 days. */
export const positiveDuration = (def: string) =>
  duration(def).pipe(
    z.number().positive('expected a duration above 0, such as 30s or 3m').max(TIMER_LIMIT_MS, TIMER_LIMIT),
  );

export interface Cidr {
  family: 4 | 6;
  /** Network address as a big integer. */
  base: bigint;
  prefix: number;
}

export function ipToBigInt(ip: string): { family: 4 | 6; value: bigint } | null {
  let addr = ip;
  // IPv4-mapped IPv6 addresses (::ffff:1.2.3.4) are matched as IPv4.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
  if (mapped?.[1]) addr = mapped[1];
  const fam = isIP(addr);
  if (fam === 4) {
    const parts = addr.split('.').map(Number);
    return { family: 4, value: parts.reduce((acc, p) => (acc << 8n) | BigInt(p), 0n) };
  }
  if (fam === 6) {
    const [head, tail] = addr.split('::') as [string, string | undefined];
    const expand = (s: string) => (s ? s.split(':') : []);
    let h = expand(head);
    let t = expand(tail ?? '');
    // embedded IPv4 in the last group
    const fix = (arr: string[]) => {
      const last = arr[arr.length - 1];
      if (last && last.includes('.')) {
        const v4 = last.split('.').map(Number);
        arr.splice(
          arr.length - 1,
          1,
          ((v4[0]! << 8) | v4[1]!).toString(16),
          ((v4[2]! << 8) | v4[3]!).toString(16),
        );
      }
      return arr;
    };
    h = fix(h);
    t = fix(t);
    const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
    return { family: 6, value: groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g || '0', 16)), 0n) };
  }
  return null;
}

export function parseCidr(text: string): Cidr | null {
  const [addr, bits] = text.split('/') as [string, string | undefined];
  const ip = ipToBigInt(addr);
  if (!ip) return null;
  const max = ip.family === 4 ? 32 : 128;
  const prefix = bits === undefined ? max : Number(bits);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max || (bits !== undefined && !/^\d+$/.test(bits)))
    return null;
  const shift = BigInt(max - prefix);
  return { family: ip.family, base: (ip.value >> shift) << shift, prefix };
}

/** Networks given as text, parsed once: lists such as MYNETWORKS are asked of every session. */
const parsedNetworks = new Map<string, Cidr | null>();

function cidrOf(text: string): Cidr | null {
  let c = parsedNetworks.get(text);
  if (c === undefined) {
    c = parseCidr(text);
    if (parsedNetworks.size >= 1000) parsedNetworks.clear();
    parsedNetworks.set(text, c);
  }
  return c;
}

/** True when `ip` lies in any of the networks. */
export function ipInNetworks(ip: string, networks: readonly (string | Cidr)[]): boolean {
  const addr = ipToBigInt(ip);
  if (!addr) return false;
  for (const n of networks) {
    const c = typeof n === 'string' ? cidrOf(n) : n;
    if (!c || c.family !== addr.family) continue;
    const shift = BigInt((c.family === 4 ? 32 : 128) - c.prefix);
    if ((addr.value >> shift) << shift === c.base) return true;
  }
  return false;
}

/**
 * A host name: dot-separated labels of letters, digits, hyphens (not first or last) and
 * underscores, each at most 63 characters, with an optional final dot.
 */
const HOST_NAME =
  /^(?=.{1,254}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/i;

export function isHostName(text: string): boolean {
  return HOST_NAME.test(text);
}

export function parseHostPort(text: string, defaultPort: number): { host: string; port: number } | null {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  let host: string;
  let portText: string | undefined;
  if (bracketed) {
    host = bracketed[1]!;
    portText = bracketed[2];
  } else if (isIP(text) === 6) {
    host = text;
  } else {
    const i = text.lastIndexOf(':');
    host = i === -1 ? text : text.slice(0, i);
    portText = i === -1 ? undefined : text.slice(i + 1);
  }
  const p = portText === undefined ? defaultPort : Number(portText);
  if (!host || !Number.isInteger(p) || p < 1 || p > 65535) return null;
  return { host, port: p };
}
