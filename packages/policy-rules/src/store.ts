import type { Redis } from 'ioredis';
import { isOutOfMemory } from '@mailyard/runtime/redis';
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

/** What an emptied list stores, so that it does not fall back to the defaults. */
const EMPTY_LIST = 'dunno';

// KEYS: the list; ARGV[1]: JSON of the change (op add with entry and 1-based position,
// 0 for the end; op remove with entry; op set with entries and, if it is to be checked,
// the previous list; `shrinking` to refuse a set that is more than removals) and the
// list's defaults (what an unset list holds). Answers {'ok', entries after...},
// {'missing', entries...} when the entry removed is not there, {'changed', entries...}
// when a set's previous list is not the list now, {'grows', entries...} when a
// `shrinking` set would add or move an entry. The read and the write are one step.
const EDIT_LIST_STEPS = `
local c = cjson.decode(ARGV[1])
local stored = redis.call('LRANGE', KEYS[1], 0, -1)
local list = {}
if #stored == 0 then
  for _, e in ipairs(c.defaults) do list[#list + 1] = e end
else
  for _, e in ipairs(stored) do if e ~= '${EMPTY_LIST}' then list[#list + 1] = e end end
end
if c.op == 'add' then
  local at = #list + 1
  if c.position > 0 then at = math.min(#list + 1, c.position) end
  table.insert(list, at, c.entry)
elseif c.op == 'remove' then
  local found = nil
  for i, e in ipairs(list) do if e == c.entry then found = i; break end end
  if not found then return {'missing', unpack(list)} end
  table.remove(list, found)
else
  if c.previous then
    local same = #list == #c.previous
    for i, e in ipairs(list) do if c.previous[i] ~= e then same = false end end
    if not same then return {'changed', unpack(list)} end
  end
  if c.shrinking then
    local at = 1
    for _, e in ipairs(c.entries) do
      while list[at] ~= nil and list[at] ~= e do at = at + 1 end
      if list[at] == nil then return {'grows', unpack(list)} end
      at = at + 1
    end
  end
  list = c.entries
end
redis.call('DEL', KEYS[1])
if #list == 0 then redis.call('RPUSH', KEYS[1], '${EMPTY_LIST}')
else redis.call('RPUSH', KEYS[1], unpack(list)) end
return {'ok', unpack(list)}`;

// The shebang (no flags) makes Redis 7 refuse the whole edit with OOM before it runs when
// Redis is at its maxmemory: an addition can wait, and a list can be long. Without it Redis
// checked memory only up to the first write, and the DEL let the RPUSH of the whole list
// through. The console answers the refusal 503, try again; the CLI prints it.
const EDIT_LIST = `#!lua${EDIT_LIST_STEPS}`;
// The same, run at maxmemory (allow-oom), for an edit that only removes entries (a removal,
// a set that leaves out entries of the list and moves none): the list it writes is shorter
// than the one it replaces, and an entry that lets in or refuses what it must not is taken
// out when Redis is full too.
const EDIT_LIST_AT_MAXMEMORY = `#!lua flags=allow-oom${EDIT_LIST_STEPS}`;

// KEYS: the version. Run at maxmemory (allow-oom): a counter that is there, rewritten in
// place; refused, a change made (an entry removed) would be announced to no instance, which
// would go on deciding by the entry.
const BUMP_VERSION = `#!lua flags=allow-oom
return redis.call('INCR', KEYS[1])`;

/** A set at maxmemory that would add or move an entry: refused as Redis refused it. */
class GrowsAtMaxmemory extends Error {}

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
      rules[l] = list.filter((e) => e !== EMPTY_LIST).map((e) => parseRestriction(e));
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
    return entries.filter((e) => e !== EMPTY_LIST);
  }

  /**
   * Replaces a list, validating every entry first (a known check, valid arguments, a
   * list of a stage where it can decide something); an empty list is kept empty, not
   * reset to the default. With `previous` (the list as the editor loaded it) the list is
   * replaced only if it is still that, in one step: a change made meanwhile by another
   * administrator is refused (`changed`), never overwritten unseen.
   */
  async set(name: string, entries: string[], previous?: readonly string[]): Promise<string[]> {
    const l = assertList(name);
    const parsed = entries.map((e) => formatRestriction(parseEntry(l, e)));
    // without `previous`, whatever the list is now is replaced
    const change = { op: 'set', entries: parsed, ...(previous ? { previous: [...previous] } : {}) } as const;
    try {
      return await this.edit(l, change);
    } catch (err) {
      // Redis at its maxmemory: done all the same if it only removes entries
      if (!isOutOfMemory(err)) throw err;
      return this.edit(l, { ...change, shrinking: true }, EDIT_LIST_AT_MAXMEMORY).catch((e: unknown) => {
        throw e instanceof GrowsAtMaxmemory ? err : e;
      });
    }
  }

  /** Inserts an entry at a 1-based position (default: the end). */
  async add(name: string, entry: string, position?: number): Promise<string[]> {
    const l = assertList(name);
    const e = formatRestriction(parseEntry(l, entry));
    return this.edit(l, { op: 'add', entry: e, position: position ?? 0 });
  }

  /** Removes an entry; one written where it can decide nothing can be removed too. */
  async remove(name: string, entry: string): Promise<string[]> {
    const l = assertList(name);
    const e = formatRestriction(parseRestriction(entry));
    return this.edit(l, { op: 'remove', entry: e }, EDIT_LIST_AT_MAXMEMORY);
  }

  /**
   * One edit of a list, read and written in one step (EDIT_LIST): of two edits at once
   * (the CLI and the console, two consoles) each applies to the list the other left, so
   * neither is lost, and of two removals of one entry the second finds it gone. A script,
   * not WATCH/MULTI: the console's requests share one connection, where one request's
   * WATCH would guard another's transaction.
   */
  private async edit(
    l: RestrictionListName,
    change:
      | { op: 'add'; entry: string; position: number }
      | { op: 'remove'; entry: string }
      | { op: 'set'; entries: string[]; previous?: string[]; shrinking?: boolean },
    script = EDIT_LIST,
  ): Promise<string[]> {
    const [outcome, ...entries] = (await this.redis.eval(
      script,
      1,
      PolicyKeys.restrictions(l),
      JSON.stringify({ ...change, defaults: DEFAULT_RESTRICTIONS[l] }),
    )) as [string, ...string[]];
    if (outcome === 'missing' && change.op === 'remove')
      throw new RestrictionError(`restriction list ${l} has no entry ${change.entry}`, 'not_found');
    if (outcome === 'changed')
      throw new RestrictionError(
        `restriction list ${l} was changed meanwhile, it is now: ${entries.join(', ') || '(empty)'}; load it again and redo the change`,
        'changed',
      );
    if (outcome === 'grows') throw new GrowsAtMaxmemory();
    await this.changed();
    return entries;
  }

  async reset(name: string): Promise<string[]> {
    const l = assertList(name);
    await this.redis.del(PolicyKeys.restrictions(l));
    await this.changed();
    return [...DEFAULT_RESTRICTIONS[l]];
  }

  async accessSet(table: string, kind: TableKind, key: string, action: string): Promise<string> {
    checkTable(table);
    // one line: the action is written as it is to the audit log and `policy access show`,
    // where a line break would start a line of its own making
    if (/[\u0000-\u001f\u007f\u0085\u2028\u2029]/.test(action.trim()))
      throw new AccessError(
        `access action with a control character or line break: ${JSON.stringify(action)}`,
      );
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

  /**
   * Removes a sender; its key as stored (`Spam@X.test` is `spam@x.test`). One that is not
   * on the list is refused, naming both, as an access table's or a restriction list's
   * entry is: a mistyped sender is not taken for removed.
   */
  async userListDel(account: string, kind: 'allow' | 'block', sender: string): Promise<string> {
    const k = normalizeAddressKey(sender);
    if (!(await this.redis.srem(PolicyKeys.userList(account, kind), k)))
      throw new AccessError(`${kind} list of ${account.toLowerCase()} has no entry ${k}`, 'not_found');
    await this.redis.publish(this.channel, USER_LISTS_CHANGED);
    return k;
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
    const v = await this.redis.eval(BUMP_VERSION, 1, PolicyKeys.version);
    await this.redis.publish(this.channel, String(v));
  }
}

function checkTable(table: string): void {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(table))
    throw new AccessError(`bad table name "${table}" (letters, digits, _ . - only)`);
}
