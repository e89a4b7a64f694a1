import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { setAtMaxmemory } from '@mailyard/runtime/redis';

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

type Log = { warn(fields: object, msg: string): void };

/** How `once` does a thing for some items: each item's keys, the thing, its record. */
export interface Once<T> {
  /** The item's claim: which run does the thing for it now. */
  claim: (item: T) => string;
  /** The item's record: written once the thing is done for it. */
  record: (item: T) => string;
  /** What each record is set to, and for how many seconds. */
  recorded: { value: string; seconds: number };
  /**
   * Whether an item another run holds is waited for, until that run has recorded it
   * (nothing left to do) or its claim has lapsed (it died: this run does it), or left to
   * a later run.
   */
  wait: boolean;
  /** The thing, done once for all the items claimed now. */
  send: (due: T[]) => Promise<unknown>;
  /** Where lapsed claims and failed renewals or releases are logged. */
  log: Log;
}

/**
 * What `once` came to: done (for `sent`, none when there was nothing to do), recorded
 * and let go of; sent but not recorded (its claims kept until they lapse, so that no
 * other run does it again before then); not claimed (Redis failed: nothing done); or not
 * sent (its claims let go of at once, so that a rerun need not wait for them to lapse).
 */
export type OnceOutcome<T> =
  | { kind: 'done'; sent: T[] }
  | { kind: 'unrecorded'; sent: T[]; err: unknown }
  | { kind: 'unclaimed'; err: unknown }
  | { kind: 'unsent'; err: unknown };

/**
 * Per claim KEYS[i] (i ≤ ARGV[3]): 0 when its record KEYS[ARGV[3] + i] exists (if given),
 * 1 claimed now for ARGV[1] (ARGV[2] ms), 2 another's claim.
 *
 * Runs when Redis is at its maxmemory (allow-oom): a claim is a key of a few dozen bytes
 * per thing being done now, gone when it is done or its holder dies. Refused, every
 * run would be held until Redis had room (the relay sends nothing it has not claimed):
 * a full Redis would stop the mail. Without a shebang Redis 7 refused the SET NX, the
 * script's first write.
 */
const TAKE = `#!lua flags=allow-oom
local n = tonumber(ARGV[3])
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
  async holding<T>(token: string, claims: string[], log: Log, work: () => Promise<T>): Promise<T> {
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

  /**
   * Writes the records of things done (`value` for `seconds`), in one round trip, Redis
   * at its maxmemory included: a record is written only once the thing was done (a
   * message sent to a recipient, a DSN published), a small key per recipient that
   * expires. Refused, nothing says the thing was done, and the next run (a redelivery, a
   * later attempt) does it again: the recipient gets a second copy, the sender a second DSN.
   */
  async record(records: string[], value: string, seconds: number): Promise<void> {
    await setAtMaxmemory(this.redis, records, value, { ex: seconds });
  }

  /** Lets go of each of `claims` still `token`'s. */
  async release(token: string, claims: string[]): Promise<void> {
    if (!claims.length) return;
    await this.redis.eval(RELEASE, claims.length, ...claims, token);
  }

  /**
   * Does a thing that must be done once per item (send a DSN naming recipients) for the
   * items not done before: claims each (`how.claim`) in the round trip that reads its
   * record (`how.record`), skipping those recorded and, unless `how.wait`, those another
   * run holds; does it for those claimed in one `how.send`, holding their claims however
   * long that takes (a publish the broker keeps waiting under a resource alarm included);
   * records them; and only then lets go. A run that dies before its record leaves claims
   * that lapse, not a record, so a later run does it: never lost, never done twice by two
   * live runs.
   */
  async once<T>(items: T[], how: Once<T>): Promise<OnceOutcome<T>> {
    const token = randomUUID();
    const due: T[] = [];
    try {
      let waiting = items;
      for (let pause = 50; waiting.length; pause = Math.min(pause * 2, 1000, this.ms / 3)) {
        if (waiting !== items) {
          await new Promise((r) => setTimeout(r, pause));
          // those taken already are kept while another run's are waited for, however long
          // that run holds them; one that lapsed all the same is another's to do now
          const held = await this.renew(token, due.map(how.claim));
          const kept = due.filter((_, i) => held[i]);
          due.splice(0, due.length, ...kept);
        }
        const found = await this.take(token, waiting.map(how.claim), waiting.map(how.record));
        due.push(...waiting.filter((_, i) => found[i] === 'taken'));
        waiting = how.wait ? waiting.filter((_, i) => found[i] === 'busy') : [];
      }
    } catch (err) {
      return { kind: 'unclaimed', err };
    }
    if (!due.length) return { kind: 'done', sent: due };
    const claims = due.map(how.claim);
    const release = () =>
      this.release(token, claims).catch((err: unknown) =>
        how.log.warn({ err, claims }, 'claims not released, they lapse'),
      );
    try {
      await this.holding(token, claims, how.log, () => how.send(due));
    } catch (err) {
      await release();
      return { kind: 'unsent', err };
    }
    const { value, seconds } = how.recorded;
    try {
      await this.record(due.map(how.record), value, seconds);
    } catch (err) {
      return { kind: 'unrecorded', sent: due, err };
    }
    // a claim left behind lapses unheeded: the record is read first
    await release();
    return { kind: 'done', sent: due };
  }
}
