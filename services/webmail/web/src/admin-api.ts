// The admin console's calls, typed by the shapes the routes answer (src/admin-api-types.ts).
import type {
  AdminAccount,
  AdminAlias,
  AdminAliasAdded,
  AdminAppPassword,
  AdminAuditPage,
  AdminDeadLetter,
  AdminDeadLetterMessage,
  AdminDkimKey,
  AdminDomain,
  AdminDomainAdded,
  AdminDomainDeleted,
  AdminExplain,
  AdminPolicy,
  AdminQueueEntry,
  AdminQueueMessage,
  AdminRecord,
  DnsDomainReport,
  DnsServerReport,
} from '../../src/admin-api-types.ts';
import { call, qs } from './api.ts';

export type {
  AdminAccount,
  AdminAlias,
  AdminAliasAdded,
  AdminAppPassword,
  AdminAuditEntry,
  AdminDeadLetter,
  AdminDeadLetterMessage,
  AdminDkimKey,
  AdminDomain,
  AdminDomainAdded,
  AdminExplain,
  AdminPolicy,
  AdminQueueEntry,
  AdminRecord,
  DnsDomainReport,
  DnsServerReport,
  DnsStatus,
} from '../../src/admin-api-types.ts';

const a = (address: string) => `/api/admin/accounts/${encodeURIComponent(address)}`;

export const admin = {
  domains: () => call<{ domains: AdminDomain[] }>('GET', '/api/admin/domains'),
  addDomain: (domain: string) => call<AdminDomainAdded>('POST', '/api/admin/domains', { domain }),
  records: (domain: string) =>
    call<{ domain: string; records: AdminRecord[] }>(
      'GET',
      `/api/admin/domains/${encodeURIComponent(domain)}/records`,
    ),
  delDomain: (domain: string) =>
    call<AdminDomainDeleted>('DELETE', `/api/admin/domains/${encodeURIComponent(domain)}`),

  /** A page of accounts; their usage (an IMAP read each) only with `usage`. */
  accounts: (p: { q?: string; offset?: number; limit?: number; usage: boolean }) =>
    call<{ accounts: AdminAccount[]; total: number }>(
      'GET',
      '/api/admin/accounts' + qs({ ...p, usage: p.usage ? '1' : '0' }),
    ),
  addAccount: (address: string, password: string, isAdmin: boolean) =>
    call<{ account: string }>('POST', '/api/admin/accounts', { address, password, admin: isAdmin }),
  lock: (address: string) => call<{ account: string }>('POST', `${a(address)}/lock`, {}),
  unlock: (address: string) => call<{ account: string }>('POST', `${a(address)}/unlock`, {}),
  setAdmin: (address: string, isAdmin: boolean) =>
    call<{ account: string; admin: boolean }>('POST', `${a(address)}/admin`, { admin: isAdmin }),
  setPassword: (address: string, password: string) =>
    call<{ account: string }>('POST', `${a(address)}/password`, { password }),
  quota: (address: string, quota: string) =>
    call<{ account: string; quota: number | null }>('POST', `${a(address)}/quota`, { quota }),
  resetTwoFactor: (address: string) =>
    call<{ account: string }>('POST', `${a(address)}/two-factor/reset`, {}),
  delAccount: (address: string) => call<{ deleted: string; warning?: string }>('DELETE', a(address)),
  appPasswords: (address: string) =>
    call<{ account: string; appPasswords: AdminAppPassword[] }>('GET', `${a(address)}/app-passwords`),
  revokeAppPassword: (address: string, name: string) =>
    call<{ revoked: string }>('POST', `${a(address)}/app-passwords/revoke`, { name }),

  aliases: () => call<{ aliases: AdminAlias[] }>('GET', '/api/admin/aliases'),
  addAlias: (source: string, targets: string[]) =>
    call<AdminAliasAdded>('POST', '/api/admin/aliases', { source, targets }),
  delAlias: (source: string, target?: string) =>
    call<{ deleted: unknown }>('POST', '/api/admin/aliases/delete', {
      source,
      ...(target ? { target } : {}),
    }),

  dkim: () => call<{ keys: AdminDkimKey[] }>('GET', '/api/admin/dkim'),
  generateDkim: (domain: string, algorithm: string) =>
    call<{ key: AdminDkimKey }>('POST', '/api/admin/dkim', { domain, algorithm }),
  rotateDkim: (domain: string, algorithm: string) =>
    call<{ key: AdminDkimKey; replaces: AdminDkimKey[] }>('POST', '/api/admin/dkim/rotate', {
      domain,
      algorithm,
    }),
  activateDkim: (domain: string, selector: string) =>
    call<{ key: AdminDkimKey; activated: boolean }>('POST', '/api/admin/dkim/activate', { domain, selector }),
  retireDkim: (domain: string, selector: string) =>
    call<{ retired: AdminDkimKey }>('POST', '/api/admin/dkim/retire', { domain, selector }),

  queue: () => call<{ messages: AdminQueueEntry[] }>('GET', '/api/admin/queue'),
  queued: (id: string) => call<AdminQueueMessage>('GET', `/api/admin/queue/${encodeURIComponent(id)}`),
  retry: (id: string) =>
    call<{ retried: number }>('POST', `/api/admin/queue/${encodeURIComponent(id)}/retry`, {}),
  retryAll: () => call<{ retried: number }>('POST', '/api/admin/queue/retry-all', {}),
  deleteQueued: (id: string) =>
    call<{ deleted: string; messages: number }>('DELETE', `/api/admin/queue/${encodeURIComponent(id)}`),

  deadLetters: () => call<{ letters: AdminDeadLetter[] }>('GET', '/api/admin/dead-letters'),
  deadLetter: (id: string) =>
    call<AdminDeadLetterMessage>('GET', `/api/admin/dead-letters/${encodeURIComponent(id)}`),
  requeue: (id: string) =>
    call<{ requeued: number }>('POST', `/api/admin/dead-letters/${encodeURIComponent(id)}/requeue`, {}),
  requeueAll: () => call<{ requeued: number }>('POST', '/api/admin/dead-letters/requeue-all', {}),
  deleteDeadLetter: (id: string) =>
    call<{ deleted: string; letters: number }>('DELETE', `/api/admin/dead-letters/${encodeURIComponent(id)}`),

  policy: () => call<AdminPolicy>('GET', '/api/admin/policy'),
  /** `previous`: the list as loaded; one changed since is refused (409), not overwritten. */
  setList: (list: string, entries: string[], previous: string[]) =>
    call<{ list: string; entries: string[] }>('PUT', `/api/admin/policy/lists/${encodeURIComponent(list)}`, {
      entries,
      previous,
    }),
  resetList: (list: string) =>
    call<{ list: string; entries: string[] }>(
      'POST',
      `/api/admin/policy/lists/${encodeURIComponent(list)}/reset`,
      {},
    ),
  access: (table: string) =>
    call<{ table: string; entries: { key: string; action: string }[] }>(
      'GET',
      `/api/admin/policy/access/${encodeURIComponent(table)}`,
    ),
  accessSet: (table: string, key: string, action: string) =>
    call<{ key: string }>('POST', `/api/admin/policy/access/${encodeURIComponent(table)}`, { key, action }),
  accessDel: (table: string, key: string) =>
    call<{ deleted: string }>('POST', `/api/admin/policy/access/${encodeURIComponent(table)}/delete`, {
      key,
    }),
  explain: (id: string) => call<AdminExplain>('GET', `/api/admin/policy/explain/${encodeURIComponent(id)}`),

  audit: (offset: number, limit = 50) =>
    call<AdminAuditPage>('GET', '/api/admin/audit' + qs({ offset, limit })),

  dnsDomain: (domain: string) =>
    call<DnsDomainReport>('GET', `/api/admin/dns/domains/${encodeURIComponent(domain)}`),
  dnsServer: () => call<DnsServerReport>('GET', '/api/admin/dns/server'),
};
