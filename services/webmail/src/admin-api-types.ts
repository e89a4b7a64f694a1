// The admin console's JSON shapes, shared by the routes (src/routes-admin*.ts) and the
// front end (web/src/admin-api.ts imports this file). No imports: the operations'
// own types (packages/admin) are checked against these where the routes return them.

/** GET /api/admin/domains */
export interface AdminDomain {
  domain: string;
  accounts: number;
  aliases: number;
  /** Selectors of its DKIM keys. */
  dkim: string[];
}

/** A DNS record the domain needs, ready to paste (packages/admin's RequiredRecord). */
export interface AdminRecord {
  purpose: string;
  name: string;
  type: 'MX' | 'TXT' | 'CNAME' | 'SRV';
  value: string;
  zoneLine: string;
}

export interface AdminDkimKey {
  domain: string;
  selector: string;
  algorithm: 'rsa' | 'ed25519';
  created: string;
  record: { name: string; value: string; zoneLine: string };
  /**
   * It signs mail now; false: it waits to be activated (`pending`), or it is being retired
   * (its record stays published until then).
   */
  signing: boolean;
  /** A rotation's new key: it signs once POST /api/admin/dkim/activate has seen its record in DNS. */
  pending: boolean;
}

/** POST /api/admin/domains */
export interface AdminDomainAdded {
  domain: string;
  dkim: AdminDkimKey[];
  records: AdminRecord[];
}

/** DELETE /api/admin/domains/:domain */
export interface AdminDomainDeleted {
  deleted: string;
  /** The selectors of the DKIM keys deleted with it: their DNS records can go. */
  dkim: string[];
}

/** GET /api/admin/accounts */
export interface AdminAccount {
  address: string;
  created: string | null;
  admin: boolean;
  locked: string | null;
  twoFactor: boolean;
  /** The account's own quota in bytes (0: unlimited); null: the installation's default. */
  quota: number | null;
  /**
   * Storage used and the quota in force, in bytes, as IMAP reports them (both null: no
   * limit, and IMAP reports usage only against one); null when it could not be read.
   */
  usage: { used: number | null; limit: number | null } | null;
}

export interface AdminAlias {
  source: string;
  targets: string[];
}

/** The answer to an alias add: `targets` are all it delivers to now, `added` those the add named. */
export interface AdminAliasAdded extends AdminAlias {
  added: string[];
}

export interface AdminAppPassword {
  name: string;
  created: string;
  lastUsed?: string;
  lastIp?: string;
}

/**
 * GET /api/admin/queue: one per deferred message; a queue id whose recipients delivery
 * handed outbound in several messages has one for each, with the same queueId.
 */
export interface AdminQueueEntry {
  queueId: string;
  mailFrom: string;
  recipients: string[];
  attempts: number;
  lastError: string | null;
  receivedAt: string;
  nextTry: string;
  queue: string;
  size: number;
}

/** GET /api/admin/queue/:id: every deferred message of the queue id, soonest next try first. */
export interface AdminQueueMessage {
  queueId: string;
  parts: AdminQueueEntry[];
  headers: string;
}

/**
 * GET /api/admin/dead-letters: one per message in the dead-letter queue, oldest first; a
 * queue id dead-lettered in several messages (outbound's parts of it) has one for each.
 */
export interface AdminDeadLetter {
  /** The envelope's queue id, as in the log lines; `dl-<digest>` for one without (an event). */
  queueId: string;
  /** `delivery`, `outbound`, `events/<key>`, `policy`...; null when it does not say. */
  originalQueue: string | null;
  /** Requeue can send it back there (a mail queue or an event). */
  requeueable: boolean;
  /** The consumer's last error, or RabbitMQ's reason. */
  reason: string | null;
  attempts: number | null;
  /** When it was dead-lettered, when known. */
  deadLetteredAt: string | null;
  /** Null: not a mail message (an event), or its envelope is unreadable. */
  mailFrom: string | null;
  recipients: string[];
  size: number;
}

/** GET /api/admin/dead-letters/:id: the queue id's dead letters and their message's header block (an event's payload). */
export interface AdminDeadLetterMessage {
  queueId: string;
  letters: AdminDeadLetter[];
  headers: string;
}

/** GET /api/admin/policy */
export interface AdminPolicy {
  lists: { name: string; stage: string; entries: string[] }[];
  /** The built-in checks: how each is written, what it does, where it can stand. */
  checks: string[];
}

export interface AdminExplain {
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

export interface AdminAuditEntry {
  at: string;
  actor: string;
  action: string;
  target: string;
  detail?: Record<string, string | number | boolean | string[]>;
}

/** GET /api/admin/audit */
export interface AdminAuditPage {
  entries: AdminAuditEntry[];
  offset: number;
  limit: number;
  /** There are older entries after this page. */
  more: boolean;
}

// The DNS check (GET /api/admin/dns/...), answered by routes-admin-dns.ts: one set of types.

export type { DnsCheckStatus as DnsStatus, DnsDomainReport, DnsServerReport } from './api-types.js';
