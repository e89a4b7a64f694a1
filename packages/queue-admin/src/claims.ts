import type { Redis } from 'ioredis';

/**
 * Claims on Redis keys, each held by one holder (its token) for a while: the queue's way
 * of letting one run at a time do a thing that must be done once (send to a recipient,
 * return it to the sender, read the delay queues). A holder renews its claims while it
 * works and releases them when done, in both cases only those still its own: one that
 * stalled past its claim never extends or deletes the claim another holder took since.
 * A holder that dies lets go by expiry, so a claim never outlives it by more than `ms`.
 *
 * Where the thing done leaves a record (a DSN sent, a recipient settled), the claim is a
 * key of its own beside it, taken in the round trip that reads the record: the record is
 * written once the thing is done, so a run that finds neither may do it, one that finds
 * the record need not, and one that finds a claim leaves it to its holder.
 *
 * Each operation is one round trip, whatever the number of keys.
 */

/** What `take` found for one claim: its record (done before), taken now, or another's. */
export type ClaimState = 'done' | 'taken' | 'busy';
const STATES: readonly ClaimState[] = ['done', 'taken', 'busy'];

/**
 * Per claim KEYS[i] (i ≤ ARGV[3]): 0 when its record KEYS[ARGV[3] + i] exists (if given),
 * 1 claimed now for ARGV[1] (ARGV[2] ms), 2 another's claim.
 */
const TAKE = `local n = tonumber(ARGV[3])
local out = {}
for i = 1, n do
  local record = KEYS[n + i]
  if record and redis.call('EXISTS', record) == 1 then out[i] = 0
  elseif redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2], 'NX') then out[i] = 1
  else out[i] = 2 end
end
return out`;

/** Extends each claim (KEYS) still ARGV[1]'s by ARGV[2] ms: per claim, 1 if it was. */
const RENEW = `local out = {}
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then out[i] = redis.call('PEXPIRE', k, ARGV[2]) else out[i] = 0 end
end
return out`;

/** Deletes each claim (KEYS) still ARGV[1]'s. */
const RELEASE = `for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('DEL', k) end
end
return 0`;

export class Claims {
  /** `ms`: how long a claim holds unless renewed. */
  constructor(
    private readonly redis: Redis,
    readonly ms: number,
  ) {}

  /**
   * Claims each of `claims` for `token`, unless the record beside it (`records[i]`, when
   * given) exists or another holds it; in that order, what each was found to be.
   */
  async take(token: string, claims: string[], records: string[] = []): Promise<ClaimState[]> {
    if (!claims.length) return [];
    if (records.length && records.length !== claims.length)
      throw new Error('a record for each claim, or none');
    const keys = [...claims, ...records];
    const found = (await this.redis.eval(
      TAKE,
      keys.length,
      ...keys,
      token,
      this.ms,
      claims.length,
    )) as number[];
    return found.map((f) => STATES[f]!);
  }

  /** Extends each of `claims` still `token`'s by `ms`; in that order, whether each was. */
  async renew(token: string, claims: string[]): Promise<boolean[]> {
    if (!claims.length) return [];
    const held = (await this.redis.eval(RENEW, claims.length, ...claims, token, this.ms)) as number[];
    return held.map((h) => h === 1);
  }

  /**
   * Runs `work` with `claims` (taken for `token`) renewed every third of `ms` until it
   * ends, so that they hold however long it takes, a publish the broker keeps waiting
   * included. A renewal that fails, or finds claims no longer `token`'s (it stalled past
   * them: another holder may be doing the same thing now), is logged on `log`.
   */
  async holding<T>(
    token: string,
    claims: string[],
    log: { warn(fields: object, msg: string): void },
    work: () => Promise<T>,
  ): Promise<T> {
    const renewal = setInterval(() => {
      this.renew(token, claims).then(
        (held) => {
          const lost = claims.filter((_, i) => !held[i]);
          if (lost.length) log.warn({ claims: lost }, 'claims lapsed before being renewed');
        },
        (err: unknown) => log.warn({ err }, 'claims not renewed'),
      );
    }, this.ms / 3);
    try {
      return await work();
    } finally {
      clearInterval(renewal);
    }
  }

  /** Lets go of each of `claims` still `token`'s. */
  async release(token: string, claims: string[]): Promise<void> {
    if (!claims.length) return;
    await this.redis.eval(RELEASE, claims.length, ...claims, token);
  }
}
