import type { Redis } from 'ioredis';
import { PolicyRules, type TableKind } from '@mailyard/policy-rules';
import type { AuditEntry } from './audit.js';

type Log = (action: string, target: string, detail?: AuditEntry['detail']) => Promise<unknown>;

/**
 * The policy rules (restriction lists, access tables, per-user sender lists) with every
 * change written to the audit log: what `mailyard policy` and the console's policy page
 * both edit through. Reads and validation are PolicyRules' own, so an unknown
 * restriction is refused with the same sentence everywhere.
 */
export class AuditedPolicyRules extends PolicyRules {
  constructor(
    redis: Redis,
    private readonly log: Log,
  ) {
    super(redis, redis.options.keyPrefix ?? '');
  }

  override async set(name: string, entries: string[], previous?: readonly string[]): Promise<string[]> {
    const now = await super.set(name, entries, previous);
    await this.log('policy.set', name, { entries: now });
    return now;
  }

  override async add(name: string, entry: string, position?: number): Promise<string[]> {
    const now = await super.add(name, entry, position);
    await this.log('policy.add', name, { entry: entry.trim(), ...(position ? { position } : {}) });
    return now;
  }

  override async remove(name: string, entry: string): Promise<string[]> {
    const now = await super.remove(name, entry);
    await this.log('policy.remove', name, { entry: entry.trim() });
    return now;
  }

  override async reset(name: string): Promise<string[]> {
    const now = await super.reset(name);
    await this.log('policy.reset', name);
    return now;
  }

  override async accessSet(table: string, kind: TableKind, key: string, action: string): Promise<string> {
    const k = await super.accessSet(table, kind, key, action);
    await this.log('policy.access.set', table, { key: k, action: action.trim() });
    return k;
  }

  override async accessDel(table: string, kind: TableKind, key: string): Promise<string> {
    const k = await super.accessDel(table, kind, key);
    // the key as stored, as policy.access.set records it: one search of the log finds both
    await this.log('policy.access.del', table, { key: k });
    return k;
  }

  override async userListAdd(account: string, kind: 'allow' | 'block', sender: string): Promise<void> {
    await super.userListAdd(account, kind, sender);
    await this.log(`policy.${kind}.add`, account, { sender });
  }

  override async userListDel(account: string, kind: 'allow' | 'block', sender: string): Promise<string> {
    const k = await super.userListDel(account, kind, sender);
    await this.log(`policy.${kind}.del`, account, { sender });
    return k;
  }
}
