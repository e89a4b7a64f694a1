import type { Redis } from 'ioredis';
import {
  AppPasswords,
  LoginGuard,
  TwoFactor,
  announceRevocation,
  endWebmailSessions,
  signOutEverywhere,
  type AppPasswordInfo,
} from '@mailyard/auth';
import { Directory, DirectoryError, LOCAL_DOMAINS_KEY, type DomainKeys } from '@mailyard/directory';
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
  normalizeAddress,
  normalizeAliasSource,
  normalizeDomainArg,
  normalizeTarget,
  requireLocalDomain,
} from './addresses.js';
import { QUOTA_OVERRIDES_KEY, Quotas } from '@mailyard/mailstore';
import type { QueueAdminDeps } from '@mailyard/queue-admin';
import { AuditLog, type AuditEntry } from './audit.js';
import { PolicyRules } from '@mailyard/policy-rules';
import type { DnsChecker, DomainReport, ServerReport } from './dns-check.js';
import { requiredRecords, type ClientEndpoints, type RequiredRecord } from './dns-records.js';
import { CleanupPendingError, DnsUnavailableError, OperationError } from './errors.js';
import {
  CLEANUP_STEPS,
  asOnlyDeletion,
  cleanupWarning,
  pendingCleanup,
  setPendingCleanup,
  type CleanupStep,
} from './account-cleanup.js';
import { accountKeys, deleteAccountPatternKeys } from './account-keys.js';
import { AuditedPolicyRules } from './policy.js';
import { QueueOperations } from './queue.js';

/** Default selector: the algorithm and the month, so a rotation gets a fresh name (`rsa-202611`). */
export function defaultSelector(algorithm: DkimAlgorithm, now = new Date()): string {
  const month = `${now.getUTCFullYear()}${String(now.getUTCMonth() + 1).padStart(2, '0')}`;
  return `${algorithm}-${month}`;
}

/** What `delUser` did. */
export interface DeletedAccount {
  account: string;
  /** The account was already gone: this finished an earlier deletion's clean-up. */
  resumed: boolean;
  /** Steps of the clean-up that failed, in one sentence; deleting it again finishes them. */
  warning?: string;
}

/** A stored DKIM key with the TXT record to publish for it (never the private key). */
export interface DkimKeyView {
  domain: string;
  selector: string;
  algorithm: DkimAlgorithm;
  created: string;
  record: DkimDnsRecord;
  /**
   * Mail is signed with it (the newest key of its algorithm). A key that does not sign is
   * one being retired: its record stays published until `dkim retire`, so mail signed
   * with it before the rotation still verifies.
   */
  signing: boolean;
  /** A rotation's new key waiting for its record: it signs once `activateDkimKey` has seen it in DNS. */
  pending: boolean;
}

const view = (k: StoredDkimKey, signing: readonly StoredDkimKey[]): DkimKeyView => ({
  domain: k.domain,
  selector: k.selector,
  algorithm: k.algorithm,
  created: k.created,
  record: dnsRecord(k.domain, k.selector, k),
  signing: signing.some((s) => s.domain === k.domain && s.selector === k.selector),
  pending: k.pending,
});

/** An account as the console lists it: what an administrator acts on (never a secret). */
export interface AccountView {
  address: string;
  created: string | null;
  admin: boolean;
  /** When it was locked; null when it is not. */
  locked: string | null;
  twoFactor: boolean;
  /** The account's own storage quota in bytes (0: unlimited); null: the installation's default (QUOTA_STORAGE). */
  quota: number | null;
}

// KEYS: account:<a>, the quota overrides; ARGV: a, bytes ('' for the default). The
// override is written only while the account is there (its record has a password), in the
// step that checks it: one written after a deletion's clean-up would be a new account's
// of the address. -1: no such account.
const SET_QUOTA = `
if redis.call('HEXISTS', KEYS[1], 'password') == 0 then return -1 end
if ARGV[2] == '' then return redis.call('HDEL', KEYS[2], ARGV[1]) end
return redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])`;

/** Told of an audit entry that could not be written after its change was made. */
export type AuditFailureHook = (err: unknown, entry: Omit<AuditEntry, 'at'>) => void;

/** Without a hook of the caller's, the loss is still said on stderr. */
const warnAuditFailure: AuditFailureHook = (err, entry) =>
  process.emitWarning(
    `${entry.action} ${entry.target} was made, but its audit entry was not written: ${
      err instanceof Error ? err.message : String(err)
    }`,
    'AuditWarning',
  );

/**
 * The administrative operations, one implementation for every caller: the `mailyard` CLI
 * and the admin console of the webmail call these and nothing else, so both check the
 * same things, say the same sentences and leave the same trace. Every change is written
 * to the audit log with `actor` (who asked) once it has been made. An entry that cannot be
 * written then (Redis lost) does not undo the change nor turn its answer into an error that
 * would say it was not made: it goes to `onAuditFailure` (the console logs it and counts
 * it in a metric; by default a warning on stderr).
 *
 * Refusals are DirectoryErrors (from the directory) or OperationErrors, each one
 * sentence; anything else (Redis failing) is thrown as it is, a temporary failure.
 */
export class Operations {
  readonly directory: Directory;
  readonly audit: AuditLog;
  private readonly appPasswords: AppPasswords;
  private readonly dkim: DkimKeyStore;
  private readonly quotas: Quotas;
  private readonly twoFactor: TwoFactor;
  private readonly guard: LoginGuard;

  constructor(
    readonly redis: Redis,
    /** Who acts: `cli:<system user>`, or the admin's account address in the console. */
    readonly actor: string,
    private readonly opts: {
      directory?: Directory;
      now?: () => Date;
      onAuditFailure?: AuditFailureHook;
    } = {},
  ) {
    this.directory = opts.directory ?? new Directory(redis);
    this.audit = new AuditLog(redis, opts.now);
    this.appPasswords = new AppPasswords(redis);
    // no key is stored for a domain that is not (or no longer) local
    this.dkim = new DkimKeyStore(redis, { localDomains: LOCAL_DOMAINS_KEY });
    // the default quota is the services' config; only the per-account overrides are ours
    this.quotas = new Quotas(redis, 0);
    this.guard = new LoginGuard(redis);
    this.twoFactor = new TwoFactor(redis, this.guard);
  }

  /** The same operations for another actor (the console makes one per request). */
  as(actor: string): Operations {
    return new Operations(this.redis, actor, { ...this.opts, directory: this.directory });
  }

  private entry(action: string, target: string, detail?: AuditEntry['detail']): Omit<AuditEntry, 'at'> {
    return { actor: this.actor, action, target, ...(detail ? { detail } : {}) };
  }

  /** Writes the audit entry of a change made; a failure is reported, never thrown (the change stays made). */
  private async log(action: string, target: string, detail?: AuditEntry['detail']): Promise<void> {
    const entry = this.entry(action, target, detail);
    try {
      await this.audit.record(entry);
    } catch (err) {
      (this.opts.onAuditFailure ?? warnAuditFailure)(err, entry);
    }
  }

  // ---- domains

  /**
   * Adds a local domain and, unless `dkim` is false, its DKIM keys (RSA 2048 and
   * Ed25519, RFC 8463 §5: receivers that know Ed25519 check it, the rest RSA), so that a
   * new domain's mail is signed from the start. A key of an algorithm the domain
   * already has (restored from a backup, or kept by a release from before delDomain
   * deleted them) is kept, not doubled.
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
    return { domain, dkim: await this.listDkimKeys(domain) };
  }

  /**
   * The DNS records a local domain needs, with `hostname` (MYHOSTNAME) as its mail server:
   * one DKIM record per stored key, since during a rotation both selectors stay published.
   */
  async domainRecords(name: string, hostname: string, client?: ClientEndpoints): Promise<RequiredRecord[]> {
    const d = await requireLocalDomain(this.directory, name);
    return requiredRecords(d, hostname, await this.dkimRecords(d), client);
  }

  private async dkimRecords(domain: string) {
    const keys = await this.dkim.list(domain);
    return keys.map((k) => ({ ...dnsRecord(k.domain, k.selector, k), selector: k.selector }));
  }

  /** The DNS check of one local domain: every record it needs against what DNS answers now. */
  async checkDomainDns(name: string, checker: DnsChecker): Promise<DomainReport> {
    const d = await requireLocalDomain(this.directory, name);
    return checker.checkDomain(d, await this.dkimRecords(d));
  }

  /** The server's identity check, against the DNSBLs the policy rules use (reject_rbl_client). */
  async checkServerDns(checker: DnsChecker): Promise<ServerReport> {
    return checker.checkServer(await this.dnsblZones());
  }

  /** The zones of every reject_rbl_client entry in the policy rules, once each. */
  async dnsblZones(): Promise<string[]> {
    const { rules } = await new PolicyRules(this.redis, '').load();
    const zones = new Set<string>();
    for (const list of Object.values(rules))
      for (const r of list)
        if (r.name === 'reject_rbl_client') zones.add(r.value[0].zone.toLowerCase().replace(/\.$/, ''));
    return [...zones].sort();
  }

  listDomains(): Promise<string[]> {
    return this.directory.listDomains();
  }

  /**
   * Deletes a local domain that has no accounts or aliases left and, in the same step, its
   * DKIM keys, as mox moves a removed domain's keys out of use: the keys of a domain we no
   * longer serve are neither kept nor listed, and a domain of the same name added later
   * starts with keys of its own. Returns the selectors deleted (their DNS records can go);
   * the audit entry names them too.
   */
  async delDomain(name: string): Promise<{ domain: string; dkim: string[] }> {
    const d = normalizeDomainArg(name);
    // read before: a key generated in between is deleted with the others, unnamed
    const dkim = (await this.dkim.list(d)).map((k) => k.selector);
    await this.directory.delDomain(d, domainKeys(d));
    await this.log('domain.del', d, dkim.length ? { dkim } : undefined);
    return { domain: d, dkim };
  }

  // ---- accounts

  /** Checks that an account can be created (`absent`) or changed (`present`); its normalised address. */
  checkAccount(address: string, want: 'absent' | 'present'): Promise<string> {
    return checkAccount(this.directory, address, want);
  }

  async addUser(address: string, password: string, opts: { admin?: boolean } = {}): Promise<string> {
    await this.finishCleanup(address);
    // the role in the step that creates the account: never an account left without it
    const a = await this.directory.addUser(address, password, { admin: opts.admin === true });
    await this.log('account.add', a, opts.admin ? { admin: true } : undefined);
    return a;
  }

  async setPassword(address: string, password: string): Promise<string> {
    const a = await this.checkAccount(address, 'present');
    await this.directory.setPassword(a, password);
    // the sessions that logged in with the old password end on every instance (told first,
    // so that a failure of what follows does not leave them open), and the webmail's, which
    // may be the intruder's the new password is meant to shut out
    await announceRevocation(this.redis, a);
    await endWebmailSessions(this.redis, a);
    await this.log('account.passwd', a);
    return a;
  }

  /**
   * Deletes an account and all that is kept for it (accountKeys: app passwords,
   * two-factor recovery codes, login history, forwarding and out-of-office reply, sender
   * allow/block lists, the webmail's remote-content senders and waiting uploads; then the
   * quota, failed-login counts and out-of-office markers): a new account of the same
   * address starts with none of it, and the old app passwords, forwarding and choices
   * do not become the new owner's. A clean-up step that fails after the record is gone
   * comes back as a warning, and delUser of the same address runs what is left. One
   * deletion of an address runs at a time; another meanwhile is refused (duplicate).
   */
  async delUser(address: string): Promise<DeletedAccount> {
    const normalized = normalizeAddress(address);
    const done = await asOnlyDeletion(this.redis, normalized, () => this.deleteUser(normalized));
    if (!done) throw new OperationError('duplicate', `account ${normalized} is being deleted already`);
    return done;
  }

  private async deleteUser(normalized: string): Promise<DeletedAccount> {
    // the account is gone but an earlier deletion's clean-up is not done: finish it
    if (!(await this.directory.accountExists(normalized))) {
      const left = await pendingCleanup(this.redis, normalized);
      if (left)
        return { account: normalized, resumed: true, ...(await this.cleanUpAccount(normalized, left)) };
    }
    const a = await this.checkAccount(normalized, 'present');
    // recorded before the record goes: a clean-up that fails afterwards is still known
    const steps = Object.keys(CLEANUP_STEPS) as CleanupStep[];
    await setPendingCleanup(this.redis, a, steps);
    await this.directory.delUser(a, await accountKeys(this.redis, a));
    return { account: a, resumed: false, ...(await this.cleanUpAccount(a, steps)) };
  }

  /**
   * A new account of an address whose deletion left steps undone would inherit what they
   * were to remove (the old owner's webmail sessions, quota, failed-login counts): they run
   * first, and the account is not created while they fail.
   */
  private async finishCleanup(address: string): Promise<void> {
    let a: string;
    try {
      a = normalizeAddress(address);
    } catch {
      return; // the directory refuses it, with the same message
    }
    if (await this.directory.accountExists(a)) return;
    const left = await pendingCleanup(this.redis, a);
    if (!left) return;
    const { warning } = await this.cleanUpAccount(a, left);
    if (warning) throw new CleanupPendingError(`account ${a} cannot be created yet: ${warning}`);
  }

  /**
   * Runs the steps of `delUser` after the record is gone, each even when one before it
   * failed (the sessions first, so that no failure leaves them open), and records those
   * that failed for the next `delUser`. The account is deleted whatever happens here: a
   * failure is a warning, never an error that would say the deletion did not happen.
   */
  private async cleanUpAccount(a: string, steps: readonly CleanupStep[]): Promise<{ warning?: string }> {
    const run: Record<CleanupStep, () => Promise<unknown>> = {
      sessions: () => endWebmailSessions(this.redis, a),
      revocation: () => announceRevocation(this.redis, a),
      // a failure here is a step left for the next delUser, which writes the entry then
      audit: () => this.audit.record(this.entry('account.del', a)),
      quota: () => this.quotas.clear(a),
      loginGuard: () => this.guard.unlock(a),
      patternKeys: () => deleteAccountPatternKeys(this.redis, a),
    };
    const left: CleanupStep[] = [];
    let cause = '';
    for (const step of Object.keys(run) as CleanupStep[]) {
      if (!steps.includes(step)) continue;
      try {
        await run[step]();
      } catch (err) {
        left.push(step);
        cause ||= `Redis: ${(err instanceof Error ? err.message : String(err)).split('\n')[0]}`;
      }
    }
    try {
      await setPendingCleanup(this.redis, a, left);
    } catch {
      // the record still lists every step: the next delUser repeats them, each is safe to repeat
    }
    return left.length ? { warning: cleanupWarning(a, left, cause) } : {};
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

  /** The accounts of one domain or of all, with their state; one Redis read per account. */
  async listAccounts(domain?: string): Promise<AccountView[]> {
    const [addresses, quotas] = await Promise.all([this.listUsers(domain), this.quotas.overrides()]);
    const records = await Promise.all(addresses.map((a) => this.directory.accountRecord(a)));
    return addresses.flatMap((address, i) => {
      const r = records[i];
      if (!r) return []; // deleted meanwhile
      return [
        {
          address,
          created: r.created ?? null,
          admin: r.role === 'admin',
          locked: r.locked ?? null,
          twoFactor: !!r.totp,
          quota: quotas[address] ?? null,
        },
      ];
    });
  }

  /**
   * Locks an account: no login of any protocol with its password or app passwords
   * (mail to it is still delivered), until it is unlocked. Its open sessions end, the
   * webmail's (`sessionsEnded` of them) and every protocol's.
   */
  async lockUser(address: string): Promise<{ account: string; sessionsEnded: number }> {
    const a = await this.checkAccount(address, 'present');
    await this.directory.setLocked(a, true);
    // a lock that left open sessions running would lock nobody out
    const sessionsEnded = await endWebmailSessions(this.redis, a);
    await signOutEverywhere(this.redis, a);
    await this.log('account.lock', a);
    return { account: a, sessionsEnded };
  }

  /** Unlocks an account, and lifts the locks its failed logins put on any address. */
  async unlockUser(address: string): Promise<string> {
    const a = await this.checkAccount(address, 'present');
    await this.directory.setLocked(a, false);
    await this.guard.unlock(a);
    await this.log('account.unlock', a);
    return a;
  }

  /** Sets the account's storage quota in bytes (0: unlimited), or with null goes back to the default. */
  async setQuota(address: string, bytes: number | null): Promise<string> {
    const a = await this.checkAccount(address, 'present');
    if (bytes !== null && (!Number.isSafeInteger(bytes) || bytes < 0))
      throw new OperationError('invalid', `a quota is a whole number of bytes, 0 for unlimited`);
    const res = await this.redis.eval(
      SET_QUOTA,
      2,
      `account:${a}`,
      QUOTA_OVERRIDES_KEY,
      a,
      bytes === null ? '' : String(bytes),
    );
    if (res === -1) throw new DirectoryError('not_found', `account ${a} does not exist`);
    await this.log('account.quota', a, { bytes: bytes ?? 'default' });
    return a;
  }

  /**
   * Turns two-factor login off for an account that lost its authenticator and its
   * recovery codes: its password logs in alone again until it enrols anew.
   */
  async resetTwoFactor(address: string): Promise<string> {
    const a = await this.checkAccount(address, 'present');
    if (!(await this.twoFactor.enabled(a)))
      throw new OperationError('invalid', `two-factor login is not on for ${a}`);
    await this.twoFactor.disable(a);
    await this.log('account.two-factor.reset', a);
    return a;
  }

  // ---- aliases and catch-alls

  /** Adds targets to an alias: `added`, each once, and `targets`, all the alias now delivers to. */
  async addAlias(
    source: string,
    targets: string[],
  ): Promise<{ source: string; targets: string[]; added: string[] }> {
    const alias = await this.directory.addAlias(source, targets);
    // each once: `Bob@x bob@x` are one target of the set, and are said and audited as one
    const added = [...new Set(targets.map(normalizeTarget))];
    await this.log('alias.add', alias.source, { targets: added });
    return { ...alias, added };
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

  /**
   * Stores a new key and returns it with its record. It signs at once when it is the
   * domain's first key of its algorithm; otherwise it is pending like a rotation's, since
   * the key that signs now must not give way before the new record is published.
   */
  async generateDkimKey(
    domain: string,
    opts: { algorithm: DkimAlgorithm; selector?: string; bits?: number },
  ): Promise<DkimKeyView> {
    const stored = await this.storeNewKey(domain, opts);
    await this.log('dkim.generate', `${stored.domain}/${stored.selector}`, { algorithm: stored.algorithm });
    return (await this.dkimKeys(stored.domain, stored.selector))[0]!;
  }

  private async storeNewKey(
    domain: string,
    opts: { algorithm: DkimAlgorithm; selector?: string; bits?: number },
  ): Promise<StoredDkimKey> {
    const n = dkimName(domain, opts.selector ?? defaultSelector(opts.algorithm));
    const notLocal = () =>
      new OperationError(
        'not_found',
        `domain ${n.domain} is not a local domain (add it with: mailyard domain add ${n.domain})`,
      );
    if (!(await this.directory.isLocalDomain(n.domain))) throw notLocal();
    // a key of the algorithm signs already: the new one waits for its record (activateDkimKey)
    const pending = (await this.dkim.signingKeys(n.domain)).some((k) => k.algorithm === opts.algorithm);
    const key = generateDkimKey(opts.algorithm, opts.bits);
    return dkimRefusals(async () => {
      try {
        return await this.dkim.add(n.domain, n.selector, key, { pending });
      } catch (err) {
        // deleted since: the store checks the domain again in the step that stores the key
        if (err instanceof DkimError && err.code === 'not_local') throw notLocal();
        throw err;
      }
    });
  }

  /**
   * The keys of one domain, or those of every local domain: keys a release from before
   * delDomain deleted them kept for a domain since deleted are left out of the whole
   * list (nothing can be done with them but `deleteDkimKey`), and shown when that
   * domain is asked for.
   */
  async listDkimKeys(domain?: string): Promise<DkimKeyView[]> {
    let keys = await this.dkim.list(domain);
    if (domain === undefined) {
      const local = new Set(await this.directory.listDomains());
      keys = keys.filter((k) => local.has(k.domain));
    } else if (!keys.length) {
      // keys left by a deleted domain are still listed (to delete them); without any, a
      // domain that is not ours is a typo, refused as listing its accounts is
      await requireLocalDomain(this.directory, domain);
    }
    const domains = [...new Set(keys.map((k) => k.domain))];
    const signing = (await Promise.all(domains.map((d) => this.dkim.signingKeys(d)))).flat();
    return keys.map((k) => view(k, signing));
  }

  /**
   * Starts a key rotation: a new key of `algorithm` under a new selector, pending: the key
   * it replaces keeps signing until `activateDkimKey` sees the new record in DNS, so no
   * mail is signed with a key receivers cannot find. (With no key of that algorithm
   * signing, there is nothing to keep and the new key signs at once.) The keys it replaces
   * stay stored and their records stay published (mail signed with them is still on its
   * way or in mailboxes that check again) until `retireDkimKey`. Returns the new key (its
   * record to publish) and the keys it replaces.
   */
  async rotateDkimKey(
    domain: string,
    opts: { algorithm: DkimAlgorithm; selector?: string; bits?: number },
  ): Promise<{ key: DkimKeyView; replaces: DkimKeyView[] }> {
    const d = normalizeDomainArg(domain);
    const before = (await this.listDkimKeys(d)).filter((k) => k.algorithm === opts.algorithm && k.signing);
    let selector = opts.selector;
    if (!selector) {
      // the month's default name, made unique when this month already has one
      const taken = new Set((await this.dkim.list(d)).map((k) => k.selector));
      const base = defaultSelector(opts.algorithm);
      selector = base;
      for (let i = 2; taken.has(selector); i++) selector = `${base}-${i}`;
    }
    const stored = await this.storeNewKey(d, { ...opts, selector });
    await this.log('dkim.rotate', `${stored.domain}/${stored.selector}`, {
      algorithm: stored.algorithm,
      replaces: before.map((k) => k.selector),
    });
    const after = await this.listDkimKeys(stored.domain);
    return {
      key: after.find((k) => k.selector === stored.selector)!,
      replaces: after.filter((k) => before.some((b) => b.selector === k.selector)),
    };
  }

  /**
   * Lets a rotation's pending key sign, once `checker` (a resolver without a cache) sees
   * its TXT record with the same public key; refused with one sentence otherwise, and a
   * DnsUnavailableError when DNS cannot answer now. The key it replaces stops signing
   * (the signers re-read keys within 30 s) but stays published until retired.
   */
  async activateDkimKey(
    domain: string,
    selector: string,
    checker: Pick<DnsChecker, 'checkDkimRecord'>,
  ): Promise<{ key: DkimKeyView; activated: boolean }> {
    const [k] = await this.dkimKeys(normalizeDomainArg(domain), selector.toLowerCase());
    if (!k!.pending) {
      if (k!.signing) return { key: k!, activated: false };
      throw new OperationError(
        'invalid',
        `key ${k!.selector} of ${k!.domain} is not waiting to sign: a newer ${k!.algorithm} key replaced it (rotate to make a new one)`,
      );
    }
    // the newest key of an algorithm signs: an older one activated would be a stored key only
    const all = await this.dkimKeys(k!.domain);
    const newer = all
      .slice(all.findIndex((x) => x.selector === k!.selector) + 1)
      .find((x) => x.signing && x.algorithm === k!.algorithm);
    if (newer)
      throw new OperationError(
        'invalid',
        `${k!.selector} would not sign mail of ${k!.domain}: ${newer.selector}, a newer ${k!.algorithm} key, signs already; retire ${k!.selector} instead (mailyard dkim retire ${k!.domain} ${k!.selector})`,
      );
    const check = await checker.checkDkimRecord(k!.record);
    switch (check.status) {
      case 'ok':
        break;
      case 'unchecked':
        throw new DnsUnavailableError(
          `DNS could not be asked for ${k!.record.name} (${check.detail ?? 'no answer'}); try again`,
        );
      case 'missing':
        throw new OperationError(
          'invalid',
          `no TXT record at ${k!.record.name} yet: publish the record \`mailyard dkim show ${k!.domain} ${k!.selector}\` prints, wait for it to be visible, and activate again`,
        );
      case 'wrong':
        throw new OperationError(
          'invalid',
          `the TXT record at ${k!.record.name} is not this key's (${check.detail ?? 'a different key'}): publish the record \`mailyard dkim show ${k!.domain} ${k!.selector}\` prints and activate again`,
        );
    }
    await dkimRefusals(() => this.dkim.activate(k!.domain, k!.selector));
    await this.log('dkim.activate', `${k!.domain}/${k!.selector}`, { algorithm: k!.algorithm });
    const [now] = await this.dkimKeys(k!.domain, k!.selector);
    return { key: now!, activated: true };
  }

  /**
   * Ends a rotation: deletes a key that no longer signs; its DNS record can go once this
   * returns. The key that signs is refused (activate the key waiting to replace it, or
   * rotate first), so mail is never left unsigned.
   */
  async retireDkimKey(domain: string, selector: string): Promise<DkimKeyView> {
    const [k] = await this.dkimKeys(normalizeDomainArg(domain), selector.toLowerCase());
    if (k!.signing) {
      const waiting = waitingToReplace(k!, await this.dkim.list(k!.domain));
      throw new OperationError(
        'invalid',
        waiting
          ? `${k!.selector} is the ${k!.algorithm} key that signs mail of ${k!.domain} until ${waiting.selector} is activated: run mailyard dkim activate ${k!.domain} ${waiting.selector} first`
          : `${k!.selector} is the ${k!.algorithm} key that signs mail of ${k!.domain}; rotate first (mailyard dkim rotate ${k!.domain} --algo ${k!.algorithm})`,
      );
    }
    await dkimRefusals(() => this.dkim.remove(k!.domain, k!.selector));
    await this.log('dkim.retire', `${k!.domain}/${k!.selector}`, { algorithm: k!.algorithm });
    return k!;
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
    const signing = await this.dkim.signingKeys(keys[0]!.domain);
    return keys.map((k) => view(k, signing));
  }

  /**
   * Deletes a key at once, whatever signed with it. The key that signs is refused while a
   * newer key of its algorithm waits for `activateDkimKey`: the waiting key never signs
   * before then, so deleting the old one would leave the domain's mail unsigned.
   */
  async deleteDkimKey(domain: string, selector: string): Promise<{ domain: string; selector: string }> {
    const n = dkimName(domain, selector);
    const keys = await this.dkim.list(n.domain);
    const k = keys.find((x) => x.selector === n.selector);
    const signing = k ? await this.dkim.signingKeys(n.domain) : [];
    if (k && signing.some((s) => s.selector === k.selector)) {
      const waiting = waitingToReplace(k, keys);
      if (waiting)
        throw new OperationError(
          'invalid',
          `${k.selector} is the ${k.algorithm} key that signs mail of ${k.domain} and ${waiting.selector} waits to replace it: run mailyard dkim activate ${k.domain} ${waiting.selector} first`,
        );
    }
    await dkimRefusals(() => this.dkim.remove(n.domain, n.selector));
    await this.log('dkim.delete', `${n.domain}/${n.selector}`);
    return n;
  }

  // ---- outbound queue and policy rules

  /** The deferred mail (the relay's and delivery's), over the broker and index `queue` reaches; changes are audited. */
  queue(deps: QueueAdminDeps): QueueOperations {
    return new QueueOperations(deps, (action, target, detail) => this.log(action, target, detail));
  }

  /** The policy rules, with every change audited. */
  policy(): AuditedPolicyRules {
    return new AuditedPolicyRules(this.redis, (action, target, detail) => this.log(action, target, detail));
  }

  // ---- the audit log

  readAudit(opts: { offset?: number; limit?: number } = {}): Promise<AuditEntry[]> {
    return this.audit.list(opts);
  }
}

/**
 * What is kept for a domain apart from the directory, deleted in the step that deletes the
 * domain: its DKIM keys. A package that keeps something new per domain adds it here.
 */
function domainKeys(domain: string): DomainKeys {
  return DkimKeyStore.keysOf(domain);
}

/** The newest pending key of `k`'s algorithm: the one that signs in `k`'s place once activated. */
function waitingToReplace(
  k: Pick<StoredDkimKey, 'algorithm'>,
  keys: readonly StoredDkimKey[],
): StoredDkimKey | undefined {
  return keys.filter((x) => x.pending && x.algorithm === k.algorithm).at(-1);
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
