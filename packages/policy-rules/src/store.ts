import type { Redis } from 'ioredis';
import { AccessError, normalizeAddressKey, normalizeClientKey, parseAccessAction } from './access.js';
import { RestrictionError } from './checks.js';
import { PolicyKeys } from './keys.js';
import {
  DEFAULT_RESTRICTIONS,
  RESTRICTION_LISTS,
  formatRestriction,
  isRestrictionList,
  misplacement,
  parseEntry,
  parseRestriction,
  type Restriction,
  type RestrictionListName,
} from './restrictions.js';

export type RuleSet = Record<RestrictionListName, Restriction[]>;

/**
 * The announcement of a change to a user's allow or block list, on the rules' channel:
 * copies of the lists are dropped, the rules need no reload. Any other message on the
 * channel (a new version, a restore) drops them too.
 */
export const USER_LISTS_CHANGED = 'user-lists';

/** What `mailyard policy explain` shows. */
export interface ExplainRecord {
  id: string;
  stage: string;
  action: string;
  reply: string | null;
  client: string;
  sender: string | null;
  recipient: string | null;
  reasons: { check: string; result: string; detail?: string; score?: number }[];
  at: string;
}

/** Which kind of keys a table holds: chosen from the check that names it. */
export type TableKind = 'client' | 'address';

function assertList(name: string): RestrictionListName {
  if (!isRestrictionList(name))
    throw new RestrictionError(`unknown restriction list "${name}" (one of ${RESTRICTION_LISTS.join(', ')})`);
  return name;
}

/**
 * Reads and edits the policy rules in Redis. Every change bumps the version key and
 * publishes on the change channel, so every policy instance reloads at once.
 * Used by the policy service and by the `mailyard policy` commands.
 */
export class PolicyRules {
  constructor(
    private readonly redis: Redis,
    /** The Redis key prefix (ioredis does not apply it to pub/sub channels). */
    private readonly prefix: string,
  ) {}

  get channel(): string {
    return PolicyKeys.changedChannel(this.prefix);
  }

  /**
   * All lists in one round trip; a list never set falls back to the default set. An
   * entry the table of checks refuses fails the load (the service keeps the rules in
   * force); `misplaced` names entries written before lists were checked for their
   * stage, which can decide nothing where they are.
   */
  async load(): Promise<{ rules: RuleSet; version: number; misplaced: string[] }> {
    const p = this.redis.pipeline();
    for (const l of RESTRICTION_LISTS) p.lrange(PolicyKeys.restrictions(l), 0, -1);
    p.get(PolicyKeys.version);
    const res = await p.exec();
    // a missing or failed answer is an error, never an empty list (the defaults)
    if (res?.length !== RESTRICTION_LISTS.length + 1)
      throw new Error('policy rules: incomplete answer from Redis');
    const rules = {} as RuleSet;
    const misplaced: string[] = [];
    RESTRICTION_LISTS.forEach((l, i) => {
      const [err, entries] = res[i]!;
      if (err) throw err;
      const list = (entries as string[]).length ? (entries as string[]) : DEFAULT_RESTRICTIONS[l];
      rules[l] = list.filter((e) => e !== 'dunno').map((e) => parseRestriction(e));
      for (const r of rules[l]) {
        const why = misplacement(l, r);
        if (why) misplaced.push(why);
      }
    });
    const [verr, v] = res[RESTRICTION_LISTS.length]!;
    if (verr) throw verr;
    const version = Number(v ?? 0);
    return { rules, version, misplaced };
  }

  async list(name: string): Promise<string[]> {
    const l = assertList(name);
    const entries = await this.redis.lrange(PolicyKeys.restrictions(l), 0, -1);
    if (!entries.length) return [...DEFAULT_RESTRICTIONS[l]];
    return entries.filter((e) => e !== 'dunno');
  }

  /**
   * Replaces a list, validating every entry first (a known check, valid arguments, a
   * list of a stage where it can decide something); an empty list is kept empty, not
   * reset to the default.
   */
  async set(name: string, entries: string[]): Promise<string[]> {
    const l = assertList(name);
    return this.write(
      l,
      entries.map((e) => formatRestriction(parseEntry(l, e))),
    );
  }

  /** Inserts an entry at a 1-based position (default: the end). */
  async add(name: string, entry: string, position?: number): Promise<string[]> {
    const l = assertList(name);
    const current = await this.list(l);
    const e = formatRestriction(parseEntry(l, entry));
    const at = position === undefined ? current.length : Math.max(0, Math.min(current.length, position - 1));
    current.splice(at, 0, e);
    return this.write(l, current);
  }

  /** Removes an entry; one written where it can decide nothing can be removed too. */
  async remove(name: string, entry: string): Promise<string[]> {
    const l = assertList(name);
    const current = await this.list(l);
    const e = formatRestriction(parseRestriction(entry));
    const i = current.indexOf(e);
    if (i === -1) throw new RestrictionError(`restriction list ${l} has no entry ${e}`, 'not_found');
    current.splice(i, 1);
    return this.write(l, current);
  }

  /** Stores a list; entries already in it are checked against the table, not moved. */
  private async write(l: RestrictionListName, entries: string[]): Promise<string[]> {
    const parsed = entries.map((e) => formatRestriction(parseRestriction(e)));
    const key = PolicyKeys.restrictions(l);
    const m = this.redis.multi().del(key);
    // a stored placeholder keeps an emptied list from falling back to the defaults
    m.rpush(key, ...(parsed.length ? parsed : ['dunno']));
    await m.exec();
    await this.changed();
    return parsed;
  }

  async reset(name: string): Promise<string[]> {
    const l = assertList(name);
    await this.redis.del(PolicyKeys.restrictions(l));
    await this.changed();
    return [...DEFAULT_RESTRICTIONS[l]];
  }

  async accessSet(table: string, kind: TableKind, key: string, action: string): Promise<string> {
    checkTable(table);
    parseAccessAction(action);
    const k = kind === 'client' ? normalizeClientKey(key) : normalizeAddressKey(key);
    await this.redis.hset(PolicyKeys.access(table), k, action.trim());
    await this.changed();
    return k;
  }

  /** Removes an entry; its key as stored (`192.0.2.1` is `192.0.2.1/32`), as accessSet answers it. */
  async accessDel(table: string, kind: TableKind, key: string): Promise<string> {
    checkTable(table);
    const k = kind === 'client' ? normalizeClientKey(key) : normalizeAddressKey(key);
    if (!(await this.redis.hdel(PolicyKeys.access(table), k)))
      throw new AccessError(`access table ${table} has no entry ${k}`, 'not_found');
    await this.changed();
    return k;
  }

  async accessList(table: string): Promise<Record<string, string>> {
    checkTable(table);
    return this.redis.hgetall(PolicyKeys.access(table));
  }

  async userListAdd(account: string, kind: 'allow' | 'block', sender: string): Promise<void> {
    await this.redis.sadd(PolicyKeys.userList(account, kind), normalizeAddressKey(sender));
    await this.redis.publish(this.channel, USER_LISTS_CHANGED);
  }

  async userListDel(account: string, kind: 'allow' | 'block', sender: string): Promise<void> {
    await this.redis.srem(PolicyKeys.userList(account, kind), normalizeAddressKey(sender));
    await this.redis.publish(this.channel, USER_LISTS_CHANGED);
  }

  async userList(account: string, kind: 'allow' | 'block'): Promise<string[]> {
    return (await this.redis.smembers(PolicyKeys.userList(account, kind))).sort();
  }

  async explain(id: string): Promise<ExplainRecord | null> {
    const raw = await this.redis.get(PolicyKeys.explain(id));
    return raw ? (JSON.parse(raw) as ExplainRecord) : null;
  }

  private changed(): Promise<void> {
    return this.announceChange();
  }

  /** Makes every instance reload the rules (after a change made behind this class, a restore). */
  async announceChange(): Promise<void> {
    const v = await this.redis.incr(PolicyKeys.version);
    await this.redis.publish(this.channel, String(v));
  }
}

function checkTable(table: string): void {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(table))
    throw new AccessError(`bad table name "${table}" (letters, digits, _ . - only)`);
}
