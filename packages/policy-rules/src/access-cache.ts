import type { Redis } from 'ioredis';
import { PolicyKeys } from './keys.js';
import type { RuleSet } from './store.js';

/** The checks whose first argument names an access table. */
const TABLE_CHECKS = new Set(['check_client_access', 'check_sender_access', 'check_recipient_access']);

/** The access tables the lists name, each once. */
export function tablesOf(rules: RuleSet): string[] {
  const names = new Set<string>();
  for (const list of Object.values(rules))
    for (const r of list) if (TABLE_CHECKS.has(r.name)) names.add((r.value as [string])[0]);
  return [...names];
}

/**
 * The access tables the restriction lists name, kept in process as Postfix keeps its
 * hash maps: loaded whole with the rules and again on every change announcement (the
 * `mailyard policy access` commands announce theirs on the rules' change channel), so a
 * lookup costs no Redis round trip. The owner says when the copy may answer (`usable`:
 * the change channel subscribed and Redis reachable); otherwise, and for a table not
 * loaded, `lookup` answers undefined and the caller reads Redis, which fails when Redis
 * does: a copy that may have missed a change never answers.
 */
export class AccessTableCache {
  private tables: Map<string, Map<string, string>> | null = null;
  private generation = 0;

  constructor(
    private readonly redis: Redis,
    private readonly usable: () => boolean,
  ) {}

  /** Loads `names` whole, in one round trip; on failure nothing answers from memory. */
  async load(names: string[]): Promise<void> {
    const generation = ++this.generation;
    this.tables = null;
    if (!names.length) {
      this.tables = new Map();
      return;
    }
    const p = this.redis.pipeline();
    for (const t of names) p.hgetall(PolicyKeys.access(t));
    const res = await p.exec();
    if (res?.length !== names.length) throw new Error('access tables: incomplete answer from Redis');
    const tables = new Map<string, Map<string, string>>();
    names.forEach((t, i) => {
      const [err, v] = res[i]!;
      if (err) throw err;
      tables.set(t, new Map(Object.entries(v as Record<string, string>)));
    });
    // a newer load started meanwhile: its answer is the one to keep
    if (generation === this.generation) this.tables = tables;
  }

  /** Forgets every table (the change channel was lost: changes may be missed). */
  invalidate(): void {
    this.generation++;
    this.tables = null;
  }

  /**
   * The action of the first of `keys` (most specific first) found in `table`, null when
   * none is; undefined when the copy cannot answer.
   */
  lookup(table: string, keys: string[]): string | null | undefined {
    if (!this.tables || !this.usable()) return undefined;
    const t = this.tables.get(table);
    if (!t) return undefined;
    for (const k of keys) {
      const v = t.get(k);
      if (v !== undefined) return v;
    }
    return null;
  }
}
