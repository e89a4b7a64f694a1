import type { Redis } from 'ioredis';
import { AppPasswords, announceRevocation, type AppPasswordInfo } from '@mailyard/auth';
import { Directory } from '@mailyard/directory';
import {
  DKIM_ALGORITHMS,
  DkimError,
  DkimKeyStore,
  dnsRecord,
  generateDkimKey,
  type DkimAlgorithm,
  type DkimDnsRecord,
  type StoredDkimKey,
} from '@mailyard/dkim';
import {
  checkAccount,
  normalizeAliasSource,
  normalizeDomainArg,
  normalizeTarget,
  requireLocalDomain,
} from './addresses.js';
import { AuditLog, type AuditEntry } from './audit.js';
import { requiredRecords, type RequiredRecord } from './dns-records.js';
import { OperationError } from './errors.js';

/** Default selector: the algorithm and the month, so a rotation gets a fresh name (`rsa-202611`). */
export function defaultSelector(algorithm: DkimAlgorithm, now = new Date()): string {
  const month = `${now.getUTCFullYear()}${String(now.getUTCMonth() + 1).padStart(2, '0')}`;
  return `${algorithm}-${month}`;
}

/** A stored DKIM key with the TXT record to publish for it (never the private key). */
export interface DkimKeyView {
  domain: string;
  selector: string;
  algorithm: DkimAlgorithm;
  created: string;
  record: DkimDnsRecord;
}

const view = (k: StoredDkimKey): DkimKeyView => ({
  domain: k.domain,
  selector: k.selector,
  algorithm: k.algorithm,
  created: k.created,
  record: dnsRecord(k.domain, k.selector, k),
});

/**
 * The administrative operations, one implementation for every caller: the `mailyard` CLI
 * and the admin console of the webmail call these and nothing else, so both check the
 * same things, say the same sentences and leave the same trace. Every change is written
 * to the audit log with `actor` (who asked) once it has been made.
 *
 * Refusals are DirectoryErrors (from the directory) or OperationErrors, each one
 * sentence; anything else (Redis failing) is thrown as it is, a temporary failure.
 */
export class Operations {
  readonly directory: Directory;
  readonly audit: AuditLog;
  private readonly appPasswords: AppPasswords;
  private readonly dkim: DkimKeyStore;

  constructor(
    readonly redis: Redis,
    /** Who acts: `cli:<system user>`, or the admin's account address in the console. */
    readonly actor: string,
    opts: { directory?: Directory; now?: () => Date } = {},
  ) {
    this.directory = opts.directory ?? new Directory(redis);
    this.audit = new AuditLog(redis, opts.now);
    this.appPasswords = new AppPasswords(redis);
    this.dkim = new DkimKeyStore(redis);
  }

  /** The same operations for another actor (the console makes one per request). */
  as(actor: string): Operations {
    return new Operations(this.redis, actor, { directory: this.directory });
  }

  private log(action: string, target: string, detail?: AuditEntry['detail']): Promise<AuditEntry> {
    return this.audit.record({ actor: this.actor, action, target, ...(detail ? { detail } : {}) });
  }

  // ---- domains

  /**
   * Adds a local domain and, unless `dkim` is false, its DKIM keys (RSA 2048 and
   * Ed25519, RFC 8463 §5: receivers that know Ed25519 check it, the rest RSA), so that a
   * new domain's mail is signed from the start. A key of an algorithm the domain
   * already has (it was deleted and added again) is kept, not doubled.
   */
  async addDomain(
    name: string,
    opts: { dkim?: boolean } = {},
  ): Promise<{ domain: string; dkim: DkimKeyView[] }> {
    const domain = await this.directory.addDomain(name);
    await this.log('domain.add', domain);
    if (opts.dkim === false) return { domain, dkim: [] };
    const have = new Set((await this.dkim.list(domain)).map((k) => k.algorithm));
    for (const algorithm of DKIM_ALGORITHMS)
      if (!have.has(algorithm)) await this.generateDkimKey(domain, { algorithm });
    return { domain, dkim: (await this.dkim.list(domain)).map(view) };
  }

  /** The DNS records a local domain needs, with `hostname` (MYHOSTNAME) as its mail server. */
  async domainRecords(name: string, hostname: string): Promise<RequiredRecord[]> {
    const d = await requireLocalDomain(this.directory, name);
    const keys = await this.dkim.signingKeys(d);
    return requiredRecords(
      d,
      hostname,
      keys.map((k) => ({ ...dnsRecord(k.domain, k.selector, k), selector: k.selector })),
    );
  }

  listDomains(): Promise<string[]> {
    return this.directory.listDomains();
  }

  async delDomain(name: string): Promise<string> {
    const d = normalizeDomainArg(name);
    await this.directory.delDomain(d);
    await this.log('domain.del', d);
    return d;
  }

  // ---- accounts

  /** Checks that an account can be created (`absent`) or changed (`present`); its normalised address. */
  checkAccount(address: string, want: 'absent' | 'present'): Promise<string> {
    return checkAccount(this.directory, address, want);
  }

  async addUser(address: string, password: string, opts: { admin?: boolean } = {}): Promise<string> {
    const a = await this.directory.addUser(address, password);
    if (opts.admin) await this.directory.setAdmin(a, true);
    await this.log('account.add', a, opts.admin ? { admin: true } : undefined);
    return a;
  }

  async setPassword(address: string, password: string): Promise<string> {
    const a = await this.checkAccount(address, 'present');
    await this.directory.setPassword(a, password);
    // the sessions that logged in with the old password end on every instance
    await announceRevocation(this.redis, a);
    await this.log('account.passwd', a);
    return a;
  }

  async delUser(address: string): Promise<string> {
    const a = await this.checkAccount(address, 'present');
    await this.directory.delUser(a);
    await announceRevocation(this.redis, a);
    await this.log('account.del', a);
    return a;
  }

  async listUsers(domain?: string): Promise<string[]> {
    const d = domain === undefined ? undefined : await requireLocalDomain(this.directory, domain);
    return this.directory.listUsers(d);
  }

  async setAdmin(address: string, admin: boolean): Promise<string> {
    const a = await this.checkAccount(address, 'present');
    await this.directory.setAdmin(a, admin);
    await this.log(admin ? 'account.admin.grant' : 'account.admin.revoke', a);
    return a;
  }

  // ---- aliases and catch-alls

  async addAlias(source: string, targets: string[]): Promise<{ source: string; targets: string[] }> {
    const src = await this.directory.addAlias(source, targets);
    const tgts = targets.map(normalizeTarget);
    await this.log('alias.add', src, { targets: tgts });
    return { source: src, targets: tgts };
  }

  async delAlias(source: string, target?: string): Promise<{ source: string; target?: string }> {
    const src = normalizeAliasSource(source);
    const tgt = target === undefined ? undefined : normalizeTarget(target);
    await this.directory.delAlias(src, tgt);
    await this.log('alias.del', src, tgt ? { target: tgt } : undefined);
    return { source: src, ...(tgt ? { target: tgt } : {}) };
  }

  async listAliases(domain?: string): Promise<{ source: string; targets: string[] }[]> {
    const d = domain === undefined ? undefined : await requireLocalDomain(this.directory, domain);
    return this.directory.listAliases(d);
  }

  // ---- app passwords of an account

  async createAppPassword(account: string, name: string): Promise<{ account: string; secret: string }> {
    const a = await this.checkAccount(account, 'present');
    const secret = await refusals(() => this.appPasswords.create(a, name));
    await this.log('app-password.create', a, { name });
    return { account: a, secret };
  }

  async listAppPasswords(account: string): Promise<AppPasswordInfo[]> {
    return this.appPasswords.list(await this.checkAccount(account, 'present'));
  }

  async revokeAppPassword(account: string, name: string): Promise<string> {
    const a = await this.checkAccount(account, 'present');
    await refusals(() => this.appPasswords.revoke(a, name));
    await this.log('app-password.revoke', a, { name });
    return a;
  }

  // ---- DKIM keys

  async generateDkimKey(
    domain: string,
    opts: { algorithm: DkimAlgorithm; selector?: string; bits?: number },
  ): Promise<DkimKeyView> {
    const n = dkimName(domain, opts.selector ?? defaultSelector(opts.algorithm));
    if (!(await this.directory.isLocalDomain(n.domain)))
      throw new OperationError(
        'not_found',
        `domain ${n.domain} is not a local domain (add it with: mailyard domain add ${n.domain})`,
      );
    const stored = await dkimRefusals(() =>
      this.dkim.add(n.domain, n.selector, generateDkimKey(opts.algorithm, opts.bits)),
    );
    await this.log('dkim.generate', `${stored.domain}/${stored.selector}`, { algorithm: stored.algorithm });
    return view(stored);
  }

  async listDkimKeys(domain?: string): Promise<DkimKeyView[]> {
    return (await this.dkim.list(domain)).map(view);
  }

  /** The keys of a domain, or its one key with `selector`; refused when there is none. */
  async dkimKeys(domain: string, selector?: string): Promise<DkimKeyView[]> {
    const keys = selector
      ? [await dkimRefusals(() => this.dkim.get(domain, selector))].filter((k) => k !== null)
      : await this.dkim.list(domain);
    if (!keys.length)
      throw new OperationError(
        'not_found',
        selector ? `no DKIM key with selector ${selector} for ${domain}` : `no DKIM keys for ${domain}`,
      );
    return keys.map(view);
  }

  async deleteDkimKey(domain: string, selector: string): Promise<{ domain: string; selector: string }> {
    const n = dkimName(domain, selector);
    await dkimRefusals(() => this.dkim.remove(n.domain, n.selector));
    await this.log('dkim.delete', `${n.domain}/${n.selector}`);
    return n;
  }

  // ---- the audit log

  readAudit(opts: { offset?: number; limit?: number } = {}): Promise<AuditEntry[]> {
    return this.audit.list(opts);
  }
}

function dkimName(domain: string, selector: string): { domain: string; selector: string } {
  try {
    return DkimKeyStore.normalize(domain, selector);
  } catch (err) {
    if (err instanceof DkimError) throw new OperationError('invalid', err.message);
    throw err;
  }
}

async function dkimRefusals<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof DkimError)
      throw new OperationError(
        /already exists/.test(err.message)
          ? 'duplicate'
          : /^no DKIM key/.test(err.message)
            ? 'not_found'
            : 'invalid',
        err.message,
      );
    throw err;
  }
}

// AppPasswords reports what the administrator can fix (bad name, duplicate, limit,
// unknown name) as plain Errors; anything else (a Redis failure) keeps its own class.
async function refusals<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof Error && err.constructor === Error) {
      const code = /already exists/.test(err.message)
        ? 'duplicate'
        : /^no app password/.test(err.message)
          ? 'not_found'
          : /already has/.test(err.message)
            ? 'limit'
            : 'invalid';
      throw new OperationError(code, err.message);
    }
    throw err;
  }
}
