import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { isOutOfMemory, setAtMaxmemory } from '@mailyard/runtime/redis';
import { parseMailAddress } from '@mailyard/smtp-core';

/** Limits on what a user may set (the account page refuses more with a 400). */
export const LIMITS = {
  /** Addresses one account forwards to. */
  forwardTargets: 10,
  /** Characters of the out-of-office text. */
  body: 8000,
  subject: 200,
  /** Days between two replies to one sender: at least 1 (RFC 3834 §2), at most 30. */
  maxDays: 30,
} as const;

/** Default days between two replies to the same sender (RFC 3834 §2 suggests 7). */
export const DEFAULT_REPLY_DAYS = 7;

const day = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, 'expected a date as YYYY-MM-DD')
  // Date.parse takes 30 February as 2 March: the day must come back as written
  .refine((d) => {
    const t = Date.parse(`${d}T00:00:00Z`);
    return !Number.isNaN(t) && new Date(t).toISOString().slice(0, 10) === d;
  }, 'not a real date');

export const vacationSchema = z
  .object({
    enabled: z.boolean({ message: 'expected true or false' }),
    subject: z
      .string({ message: 'expected a subject' })
      .max(LIMITS.subject, `at most ${LIMITS.subject} characters`)
      .refine((s) => !/[\r\n\u0000]/.test(s), 'one line only'),
    body: z
      .string({ message: 'expected the text of the reply' })
      .max(LIMITS.body, `at most ${LIMITS.body} characters`)
      .refine((s) => !s.includes('\u0000'), 'no NUL characters'),
    /** First and last day (inclusive, UTC) the reply is sent; absent: from now / without end. */
    start: day.nullable().default(null),
    end: day.nullable().default(null),
    days: z
      .number({ message: 'expected a number of days' })
      .int('a whole number of days')
      .min(1, 'at least 1')
      .max(LIMITS.maxDays, `at most ${LIMITS.maxDays}`)
      .default(DEFAULT_REPLY_DAYS),
  })
  .refine((v) => !v.enabled || v.body.trim().length > 0, {
    message: 'the text of the reply is empty',
    path: ['body'],
  })
  .refine((v) => !v.start || !v.end || v.start <= v.end, {
    message: 'the last day is before the first',
    path: ['end'],
  });
export type Vacation = z.infer<typeof vacationSchema>;

export const forwardingSchema = z.object({
  /** Where every message is sent on; empty: no forwarding. */
  targets: z
    .array(
      z
        .string({ message: 'expected an address' })
        .max(320, 'address too long')
        .transform((a, ctx) => {
          const ok = checkAddress(a);
          if (!ok) ctx.addIssue({ code: 'custom', message: `"${a.slice(0, 100)}" is not a valid address` });
          return ok ?? '';
        }),
      { message: 'expected a list of addresses' },
    )
    .max(LIMITS.forwardTargets, `at most ${LIMITS.forwardTargets} addresses`)
    .refine((t) => new Set(t).size === t.length, 'an address is listed twice'),
  /** Keep a copy in the mailbox too. */
  keepCopy: z.boolean({ message: 'expected true or false' }).default(true),
});
export type Forwarding = z.infer<typeof forwardingSchema>;

/** Mail rules of one account, as the account page sets them and delivery applies them. */
export interface AccountRules {
  vacation: Vacation | null;
  forwarding: Forwarding | null;
}

const vacationKey = (account: string) => `rules:vacation:${account.toLowerCase()}`;
const forwardKey = (account: string) => `rules:forward:${account.toLowerCase()}`;
/** The keys of an account's forwarding and out-of-office reply, which go with the account. */
export const mailRulesKeys = (account: string) => [vacationKey(account), forwardKey(account)];
/**
 * SCAN pattern of an account's "replied to this sender" markers (one key per sender, each
 * with its own TTL), for removing them with the account.
 */
export const mailRulesRepliedPattern = (account: string) =>
  `rules:replied:${account.toLowerCase().replace(/[*?[\]\\]/g, '\\$&')}:*`;
// a sender address can be long: a digest keeps the key short
const repliedKey = (account: string, sender: string) =>
  `rules:replied:${account.toLowerCase()}:${createHash('sha256').update(sender.toLowerCase()).digest('base64url').slice(0, 22)}`;

/**
 * KEYS: the forwarding; ARGV: the new setting, then its targets. Sets it when the stored
 * one forwards to every target it names (a target left out, keeping a copy or not): 1, else
 * 0. Run at maxmemory (allow-oom), where a SET is refused: a value no longer than the one it
 * replaces, and a target found to be someone else's is taken out when Redis is full too.
 */
const SET_FEWER_TARGETS = `#!lua flags=allow-oom
local ok, f = pcall(cjson.decode, redis.call('GET', KEYS[1]) or '')
if not ok or type(f) ~= 'table' or type(f.targets) ~= 'table' then return 0 end
local had = {}
for _, t in ipairs(f.targets) do had[t] = true end
for i = 2, #ARGV do if not had[ARGV[i]] then return 0 end end
redis.call('SET', KEYS[1], ARGV[1])
return 1`;

/**
 * Forwarding and out-of-office settings in Redis, next to the account:
 *   rules:vacation:<account>   STRING  JSON Vacation
 *   rules:forward:<account>    STRING  JSON Forwarding
 *   rules:replied:<account>:<digest of the sender>   replied to this sender (TTL: the vacation's days)
 * Writers validate with the schemas; readers take what they find (a value that does not
 * parse is treated as unset, never as an error that holds mail).
 */
export class MailRules {
  constructor(private readonly redis: Redis) {}

  async get(account: string): Promise<AccountRules> {
    const [vacation, forwarding] = await this.redis.mget(vacationKey(account), forwardKey(account));
    const f = parsed(forwardingSchema, forwarding);
    return { vacation: parsed(vacationSchema, vacation), forwarding: f?.targets.length ? f : null };
  }

  /**
   * No target is no forwarding: the key goes, which Redis does at its maxmemory too, where
   * it refuses a SET. Forwarding found leading to someone else's address is then turned off
   * when Redis is full as well, and so is one target of several (SET_FEWER_TARGETS); a
   * target added is refused then, with Redis's OOM.
   */
  async setForwarding(account: string, f: Forwarding): Promise<void> {
    const forwarding = forwardingSchema.parse(f);
    const key = forwardKey(account);
    if (!forwarding.targets.length) return void (await this.redis.del(key));
    const value = JSON.stringify(forwarding);
    try {
      await this.redis.set(key, value);
    } catch (err) {
      if (!isOutOfMemory(err)) throw err;
      if (!(await this.redis.eval(SET_FEWER_TARGETS, 1, key, value, ...forwarding.targets))) throw err;
    }
  }

  async setVacation(account: string, v: Vacation): Promise<void> {
    await this.redis.set(vacationKey(account), JSON.stringify(vacationSchema.parse(v)));
  }

  /**
   * Claims the one reply to `sender` within `days` (RFC 3834 §2: not more often than once
   * every few days); false when one was already sent. Claimed before the reply is sent, so
   * two instances delivering two messages of the sender at once send one reply.
   */
  async claimReply(account: string, sender: string, days: number): Promise<boolean> {
    return (await this.redis.set(repliedKey(account, sender), '1', 'EX', days * 86400, 'NX')) === 'OK';
  }

  /** A marker of work done once (delivery's "already forwarded"). */
  async redisExists(key: string): Promise<boolean> {
    return (await this.redis.exists(key)) === 1;
  }
  /**
   * Written when Redis is at its maxmemory (allow-oom): set once the work was done (a
   * forward published), a small key that expires. Refused, the rerun would do it again.
   */
  async redisMark(key: string, ttlSeconds: number): Promise<void> {
    await setAtMaxmemory(this.redis, key, '1', { ex: ttlSeconds });
  }

  /** Gives the claim back (the reply could not be sent). */
  async releaseReply(account: string, sender: string): Promise<void> {
    await this.redis.del(repliedKey(account, sender));
  }
}

function parsed<T>(schema: z.ZodType<T>, raw: string | null | undefined): T | null {
  if (!raw) return null;
  try {
    const r = schema.safeParse(JSON.parse(raw));
    return r.success ? r.data : null;
  } catch {
    return null;
  }
}

/** An address a user may type: checked by the SMTP rules, lower-cased domain. */
export function checkAddress(raw: string): string | null {
  const p = parseMailAddress(raw);
  return p.ok && !p.value.domain.startsWith('[') ? p.value.address : null;
}
