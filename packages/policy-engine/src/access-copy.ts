import type { Redis } from 'ioredis';
import { CHECKS, PolicyKeys, type RuleSet } from '@mailyard/policy-rules';

/** The access tables the lists name (the first argument of a check that reads one), each once. */
export function tablesOf(rules: RuleSet): string[] {
  const names = new Set<string>();
  for (const list of Object.values(rules))
    for (const r of list)
      if (CHECKS[r.name].needs.includes('access-tables')) names.add((r.value as [string])[0]);
  return [...names];
}

/** Where an access lookup may be answered without Redis. */
export interface AccessTableSource {
  /**
   * The action of the first of `keys` (most specific first) found in `table`, null when
   * none is; undefined when this source cannot answer (the lookup then reads Redis).
   */
  lookup(table: string, keys: string[]): string | null | undefined;
}

/**
 * The access tables a rule set names, read whole in one round trip, as Postfix keeps its
 * hash maps in memory; the `mailyard policy access` commands announce every change on the
 * rules' channel, and the holder loads them again with the rules.
 */
export class AccessTables implements AccessTableSource {
  private constructor(private readonly tables: ReadonlyMap<string, ReadonlyMap<string, string>>) {}

  static async load(redis: Redis, names: string[]): Promise<AccessTables> {
    if (!names.length) return new AccessTables(new Map());
    const p = redis.pipeline();
    for (const t of names) p.hgetall(PolicyKeys.access(t));
    const res = await p.exec();
    // a missing answer is a failure, never an empty table
    if (res?.length !== names.length) throw new Error('access tables: incomplete answer from Redis');
    const tables = new Map<string, Map<string, string>>();
    names.forEach((t, i) => {
      const [err, v] = res[i]!;
      if (err) throw err;
      tables.set(t, new Map(Object.entries(v as Record<string, string>)));
    });
    return new AccessTables(tables);
  }

  lookup(table: string, keys: string[]): string | null | undefined {
    const t = this.tables.get(table);
    if (!t) return undefined;
    for (const k of keys) {
      const v = t.get(k);
      if (v !== undefined) return v;
    }
    return null;
  }
}
