import { domainToUnicode } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { normalizeAddress, normalizeDomainArg, parseQuota } from '@mailyard/admin';
import type {
  AdminAccount,
  AdminAlias,
  AdminAliasAdded,
  AdminAppPassword,
  AdminAuditPage,
  AdminDkimKey,
  AdminDomain,
  AdminDomainAdded,
  AdminDomainDeleted,
  AdminRecord,
} from './admin-api-types.js';
import { adminRoute } from './admin-ops.js';
import { parse, type Ctx } from './context.js';
import { errors } from './errors.js';
import { connectImap } from './imap-pool.js';
import { appPasswordName } from './routes-account.js';

export const domainSchema = z
  .string({ message: 'expected a domain name' })
  .trim()
  .min(1, 'expected a domain name')
  .max(253, 'domain name too long');
const addressSchema = z
  .string({ message: 'expected an address' })
  .trim()
  .min(3, 'expected an address')
  .max(320, 'address too long');
const aliasSource = z
  .string({ message: 'expected an address or @domain' })
  .trim()
  .min(2, 'expected an address or @domain')
  .max(320, 'address too long');
export const selectorSchema = z
  .string({ message: 'expected a selector' })
  .trim()
  .min(1, 'expected a selector')
  .max(63, 'selector too long');
const algorithmSchema = z.enum(['rsa', 'ed25519'], { message: 'expected rsa or ed25519' });
const accountParam = z.object({ address: addressSchema });
const domainParam = z.object({ domain: domainSchema });
const paging = (max: number, def: number) =>
  z.object({
    offset: z.coerce.number().int().min(0).max(1_000_000).default(0),
    limit: z.coerce.number().int().min(1).max(max).default(def),
  });

/** How long reading one account's usage over IMAP may take before the list shows it as unknown. */
const USAGE_TIMEOUT_MS = 5000;
/** Accounts whose usage is read at once. */
const USAGE_CONCURRENCY = 4;

/**
 * The admin console's directory pages: domains (with the DNS records to publish),
 * accounts, aliases and catch-alls, a user's app passwords, DKIM keys and the audit log.
 * Every route goes through adminRoute (the admin guard, the audited operations the CLI
 * calls too); the changes need the session's CSRF token like every other change.
 */
export function registerAdminRoutes(app: FastifyInstance, ctx: Ctx): void {
  const host = ctx.config.myhostname;

  // ---- domains

  app.get(
    '/api/admin/domains',
    adminRoute(ctx, async (_req, { ops }): Promise<{ domains: AdminDomain[] }> => {
      const [domains, accounts, aliases, keys] = await Promise.all([
        ops.listDomains(),
        ops.listUsers(),
        ops.listAliases(),
        ops.listDkimKeys(),
      ]);
      const of = (d: string, a: string) => a.slice(a.lastIndexOf('@') + 1) === d;
      return {
        domains: domains.map((domain) => ({
          domain,
          accounts: accounts.filter((a) => of(domain, a)).length,
          aliases: aliases.filter((a) => of(domain, a.source)).length,
          dkim: keys.filter((k) => k.domain === domain).map((k) => k.selector),
        })),
      };
    }),
  );

  /** Adds a domain with its DKIM keys (RSA and Ed25519) and answers the records to publish. */
  app.post(
    '/api/admin/domains',
    adminRoute(ctx, async (req, { ops }): Promise<AdminDomainAdded> => {
      const body = parse(z.object({ domain: domainSchema, dkim: z.boolean().default(true) }), req.body);
      const { domain, dkim } = await ops.addDomain(body.domain, { dkim: body.dkim });
      return { domain, dkim, records: await ops.domainRecords(domain, host) };
    }),
  );

  app.get(
    '/api/admin/domains/:domain/records',
    adminRoute(ctx, async (req, { ops }): Promise<{ domain: string; records: AdminRecord[] }> => {
      const { domain } = parse(domainParam, req.params);
      const records = await ops.domainRecords(domain, host);
      // as the records name it (an IDN in ASCII), not as typed
      return { domain: normalizeDomainArg(domain), records };
    }),
  );

  /** Deletes a domain with its DKIM keys; `dkim`: their selectors, whose records can go. */
  app.delete(
    '/api/admin/domains/:domain',
    adminRoute(ctx, async (req, { ops }): Promise<AdminDomainDeleted> => {
      const { domain } = parse(domainParam, req.params);
      const { domain: deleted, dkim } = await ops.delDomain(domain);
      return { deleted, dkim };
    }),
  );

  // ---- accounts

  /**
   * One account's storage use through IMAP (the service login acting for it); null when it
   * cannot be read by `until` (the page's probes share IMAP_TIMEOUT: a store that stopped
   * answering costs the page that long, not five seconds per account).
   */
  const usageOf = async (account: string, until: number): Promise<AdminAccount['usage']> => {
    const left = Math.min(USAGE_TIMEOUT_MS, until - Date.now());
    if (left <= 0) return null;
    const client = connectImap(ctx.imap, account, { logger: ctx.logger });
    const timer = setTimeout(() => client.close(), left);
    try {
      await client.connect();
      const q = await client.getQuota('INBOX');
      if (!q) return null;
      // no STORAGE resource: the account has no limit, and RFC 9208 has no way to say usage without one
      if (!q.storage) return { used: null, limit: null };
      return { used: q.storage.usage ?? null, limit: q.storage.limit ?? null };
    } catch {
      return null;
    } finally {
      // the deadline holds for the logout too: a store that answered QUOTA and then
      // stopped would hold it for imapflow's five minutes
      await client.logout().catch(() => client.close());
      clearTimeout(timer);
    }
  };

  app.get(
    '/api/admin/accounts',
    adminRoute(ctx, async (req, { ops }): Promise<{ accounts: AdminAccount[]; total: number }> => {
      const q = parse(
        paging(200, 50).extend({
          domain: domainSchema.optional(),
          q: z.string().max(320).optional(),
          usage: z.enum(['0', '1']).default('1'),
        }),
        req.query,
      );
      const needle = q.q?.trim().toLowerCase();
      // an IDN is stored in ASCII, and found as the operator writes it too (zürich for xn--zrich-kva)
      const matches = (address: string) =>
        !needle || address.includes(needle) || unicodeAddress(address).toLowerCase().includes(needle);
      const all = (await ops.listAccounts(q.domain)).filter((a) => matches(a.address));
      const page = all.slice(q.offset, q.offset + q.limit);
      const until = Date.now() + ctx.config.imap_timeout;
      const usage =
        q.usage === '1' ? await mapLimit(page, USAGE_CONCURRENCY, (a) => usageOf(a.address, until)) : [];
      return { accounts: page.map((a, i) => ({ ...a, usage: usage[i] ?? null })), total: all.length };
    }),
  );

  app.post(
    '/api/admin/accounts',
    adminRoute(ctx, async (req, { ops }) => {
      const body = parse(
        z.object({
          address: addressSchema,
          // its length is the directory's to refuse, in the sentence the CLI prints
          password: z.string({ message: 'expected a password' }).min(1, 'expected a password'),
          admin: z.boolean().default(false),
        }),
        req.body,
      );
      return { account: await ops.addUser(body.address, body.password, { admin: body.admin }) };
    }),
  );

  /** Locked: no login anywhere, and its webmail sessions end now. */
  app.post(
    '/api/admin/accounts/:address/lock',
    adminRoute(ctx, async (req, { ops, admin }) => {
      const { address } = parse(accountParam, req.params);
      notSelf(address, admin, 'lock');
      const { account, sessionsEnded } = await ops.lockUser(address);
      return { account, locked: true, sessionsEnded };
    }),
  );

  app.post(
    '/api/admin/accounts/:address/unlock',
    adminRoute(ctx, async (req, { ops }) => ({
      account: await ops.unlockUser(parse(accountParam, req.params).address),
      locked: false,
    })),
  );

  /**
   * Gives or takes the admin role, as `mailyard user admin [--remove]`. An admin does not
   * take it from the account they are logged in with: the console would shut them out.
   */
  app.post(
    '/api/admin/accounts/:address/admin',
    adminRoute(ctx, async (req, { ops, admin }) => {
      const { address } = parse(accountParam, req.params);
      const body = parse(z.object({ admin: z.boolean({ message: 'expected true or false' }) }), req.body);
      if (!body.admin) notSelf(address, admin, 'take the admin role from');
      return { account: await ops.setAdmin(address, body.admin), admin: body.admin };
    }),
  );

  /**
   * Sets an account's password, as `mailyard user passwd`: the directory's strength rules,
   * and the account's sessions end everywhere. Not the admin's own: the account page
   * changes it after asking for the current one.
   */
  app.post(
    '/api/admin/accounts/:address/password',
    adminRoute(ctx, async (req, { ops, admin }) => {
      const { address } = parse(accountParam, req.params);
      // its length is the directory's to refuse, in the sentence the CLI prints
      const body = parse(
        z.object({ password: z.string({ message: 'expected a password' }).min(1, 'expected a password') }),
        req.body,
      );
      notSelf(
        address,
        admin,
        'set the password of',
        'change it on your account page, which asks for the current one',
      );
      return { account: await ops.setPassword(address, body.password) };
    }),
  );

  app.post(
    '/api/admin/accounts/:address/quota',
    adminRoute(ctx, async (req, { ops }) => {
      const { address } = parse(accountParam, req.params);
      const { quota } = parse(
        z.object({ quota: z.string({ message: 'expected a quota' }).max(32, 'quota too long') }),
        req.body,
      );
      const bytes = parseQuota(quota);
      return { account: await ops.setQuota(address, bytes), quota: bytes };
    }),
  );

  app.post(
    '/api/admin/accounts/:address/two-factor/reset',
    adminRoute(ctx, async (req, { ops }) => ({
      account: await ops.resetTwoFactor(parse(accountParam, req.params).address),
      twoFactor: false,
    })),
  );

  app.delete(
    '/api/admin/accounts/:address',
    adminRoute(ctx, async (req, { ops, admin }) => {
      const { address } = parse(accountParam, req.params);
      notSelf(address, admin, 'delete');
      const del = await ops.delUser(address);
      // deleted either way: a failed clean-up is a warning, and deleting again finishes it
      return { deleted: del.account, ...(del.warning ? { warning: del.warning } : {}) };
    }),
  );

  app.get(
    '/api/admin/accounts/:address/app-passwords',
    adminRoute(ctx, async (req, { ops }): Promise<{ account: string; appPasswords: AdminAppPassword[] }> => {
      const { address } = parse(accountParam, req.params);
      const appPasswords = await ops.listAppPasswords(address);
      return { account: normalizeAddress(address), appPasswords };
    }),
  );

  /** Revoked: it logs in nowhere any more, and the sessions that logged in with it end. */
  app.post(
    '/api/admin/accounts/:address/app-passwords/revoke',
    adminRoute(ctx, async (req, { ops }) => {
      const { address } = parse(accountParam, req.params);
      const { name } = parse(appPasswordName, req.body);
      return { account: await ops.revokeAppPassword(address, name), revoked: name };
    }),
  );

  // ---- aliases and catch-alls

  app.get(
    '/api/admin/aliases',
    adminRoute(ctx, async (req, { ops }): Promise<{ aliases: AdminAlias[] }> => {
      const q = parse(z.object({ domain: domainSchema.optional() }), req.query);
      return { aliases: await ops.listAliases(q.domain) };
    }),
  );

  app.post(
    '/api/admin/aliases',
    adminRoute(ctx, async (req, { ops }): Promise<AdminAliasAdded> => {
      const body = parse(
        z.object({
          source: aliasSource,
          targets: z
            .array(addressSchema)
            .min(1, 'expected at least one target')
            .max(100, 'at most 100 targets'),
        }),
        req.body,
      );
      return ops.addAlias(body.source, body.targets);
    }),
  );

  /** Deletes an alias, or only one of its targets. */
  app.post(
    '/api/admin/aliases/delete',
    adminRoute(ctx, async (req, { ops }) => {
      const body = parse(z.object({ source: aliasSource, target: addressSchema.optional() }), req.body);
      return { deleted: await ops.delAlias(body.source, body.target) };
    }),
  );

  // ---- DKIM keys

  app.get(
    '/api/admin/dkim',
    adminRoute(ctx, async (req, { ops }): Promise<{ keys: AdminDkimKey[] }> => {
      const q = parse(z.object({ domain: domainSchema.optional() }), req.query);
      return { keys: await ops.listDkimKeys(q.domain) };
    }),
  );

  app.post(
    '/api/admin/dkim',
    adminRoute(ctx, async (req, { ops }): Promise<{ key: AdminDkimKey }> => {
      const body = parse(
        z.object({ domain: domainSchema, algorithm: algorithmSchema, selector: selectorSchema.optional() }),
        req.body,
      );
      return {
        key: await ops.generateDkimKey(body.domain, {
          algorithm: body.algorithm,
          ...(body.selector ? { selector: body.selector } : {}),
        }),
      };
    }),
  );

  /**
   * A new key under a new selector; the key it replaces signs until the new one is
   * activated (POST /api/admin/dkim/activate, routes-admin-dns.ts), and stays published
   * until retired.
   */
  app.post(
    '/api/admin/dkim/rotate',
    adminRoute(ctx, async (req, { ops }): Promise<{ key: AdminDkimKey; replaces: AdminDkimKey[] }> => {
      const body = parse(z.object({ domain: domainSchema, algorithm: algorithmSchema }), req.body);
      return ops.rotateDkimKey(body.domain, { algorithm: body.algorithm });
    }),
  );

  app.post(
    '/api/admin/dkim/retire',
    adminRoute(ctx, async (req, { ops }): Promise<{ retired: AdminDkimKey }> => {
      const body = parse(z.object({ domain: domainSchema, selector: selectorSchema }), req.body);
      return { retired: await ops.retireDkimKey(body.domain, body.selector) };
    }),
  );

  // ---- the audit log

  app.get(
    '/api/admin/audit',
    adminRoute(ctx, async (req, { ops }): Promise<AdminAuditPage> => {
      const q = parse(paging(200, 50), req.query);
      // one more than asked, to tell whether there is another page
      const entries = await ops.readAudit({ offset: q.offset, limit: q.limit + 1 });
      return {
        entries: entries.slice(0, q.limit),
        offset: q.offset,
        limit: q.limit,
        more: entries.length > q.limit,
      };
    }),
  );
}

/**
 * An admin does not lock or delete the account they are logged in with, nor take its
 * admin role (the CLI can), however the address is written: compared as the operations
 * store it (`"alice"@` is `alice@`, a Unicode domain its ASCII form). `instead`: what to
 * do instead, said after the refusal.
 */
function notSelf(address: string, admin: string, what: string, instead?: string): void {
  let a: string;
  try {
    a = normalizeAddress(address);
  } catch {
    return; // not an address: the operation refuses it with its own sentence
  }
  if (a === admin)
    throw errors.conflict(
      `You cannot ${what} the account you are logged in with${instead ? `: ${instead}` : ''}`,
    );
}

/** `local@xn--...` with its domain in Unicode (the address unchanged when it has no A-label). */
function unicodeAddress(address: string): string {
  const at = address.lastIndexOf('@');
  return `${address.slice(0, at)}@${domainToUnicode(address.slice(at + 1)) || address.slice(at + 1)}`;
}

/** `fn` over `items`, at most `n` at once, results in order. */
async function mapLimit<T, R>(items: readonly T[], n: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}
