import type { Redis } from 'ioredis';

/** One administrative action: who did what to what, and when. */
export interface AuditEntry {
  /** ISO 8601. */
  at: string;
  /** Who: `cli:<system user>` for the CLI, the admin's account address for the console. */
  actor: string;
  /** Dotted verb, e.g. `domain.add`, `account.lock`, `dkim.generate`. */
  action: string;
  /** What it acted on: a domain, an address, `domain/selector`, a queue id. */
  target: string;
  /** Facts worth keeping (never a secret): the alias targets, the key algorithm, the client address. */
  detail?: Record<string, string | number | boolean | string[]>;
}

/** The LIST of the audit log. Renaming it is a migration. */
export const AUDIT_LOG_KEY = 'audit:log';

/** How many entries are kept; older ones fall off (the log is for reading, not archiving). */
export const AUDIT_LOG_LIMIT = 10_000;

/**
 * The audit log of administrative actions, newest first, in Redis next to the data the
 * actions change, so every instance of the console and every CLI run writes one log.
 *   audit:log  LIST  JSON AuditEntry, newest at the head, trimmed to AUDIT_LOG_LIMIT
 */
export class AuditLog {
  constructor(
    private readonly redis: Redis,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async record(entry: Omit<AuditEntry, 'at'>): Promise<AuditEntry> {
    const full: AuditEntry = { at: this.now().toISOString(), ...entry };
    const res = await this.redis
      .multi()
      .lpush(AUDIT_LOG_KEY, JSON.stringify(full))
      .ltrim(AUDIT_LOG_KEY, 0, AUDIT_LOG_LIMIT - 1)
      .exec();
    // a command refused inside the transaction (out of memory) is in its answer, not thrown
    const refused = res?.find(([err]) => err)?.[0];
    if (refused) throw refused;
    return full;
  }

  /** The newest `limit` entries (after skipping `offset`), newest first. */
  async list(opts: { offset?: number; limit?: number } = {}): Promise<AuditEntry[]> {
    const offset = Math.max(0, opts.offset ?? 0);
    const limit = Math.min(Math.max(1, opts.limit ?? 100), 1000);
    const raw = await this.redis.lrange(AUDIT_LOG_KEY, offset, offset + limit - 1);
    return raw.flatMap((r) => {
      try {
        return [JSON.parse(r) as AuditEntry];
      } catch {
        return [];
      }
    });
  }
}

/**
 * A field as one line can show it: control characters (line breaks, tabs, escapes for the
 * terminal) and Unicode's line and paragraph separators written as escapes, so that no
 * value, however it was stored, reads as a line or a column of its own.
 */
function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    const named: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
    return named[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });
}

/** One line of `mailyard audit`: time, actor, action, target, details. */
export function formatAuditEntry(e: AuditEntry): string {
  const detail = Object.entries(e.detail ?? {})
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : String(v)}`)
    .join(' ');
  return [e.at, e.actor, e.action, e.target, detail]
    .map((f) => printable(String(f)))
    .join('\t')
    .trimEnd();
}
