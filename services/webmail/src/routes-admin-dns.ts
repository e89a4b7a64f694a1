import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { dnsCheckerFromConfig, type DnsChecker } from '@mailyard/admin';
import { DirectoryError } from '@mailyard/directory';
import type { AdminDkimKey } from './admin-api-types.js';
import { adminRoute } from './admin-ops.js';
import type { DnsDomainReport, DnsServerReport } from './api-types.js';
import { adminOf, parse, type Ctx } from './context.js';
import { domainSchema, selectorSchema } from './routes-admin.js';
import { ApiError, errors } from './errors.js';

const domainParam = z.object({
  domain: z.string().min(1, 'expected a domain').max(253, 'domain name too long'),
});

/**
 * The admin console's DNS page: the records each local domain needs against what DNS
 * answers now, and the server's identity (forward and reverse DNS, blocklists,
 * certificate). The same checks as `mailyard dns check` and the policy service's
 * metrics (packages/admin, dns-check.ts), asked live on a resolver without cache so a
 * record just fixed shows at once. Statuses: ok, wrong, missing, and unchecked when the
 * resolver failed (never reported as missing).
 */
export function registerAdminDnsRoutes(
  app: FastifyInstance,
  ctx: Ctx,
  checker: DnsChecker = dnsCheckerFromConfig(ctx.config, { now: ctx.now }),
): void {
  const opsFor = (account: string) => ctx.operations.as(account);
  /** Redis failing is a 503, a refusal of the directory an answer. */
  const run = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof ApiError) throw err;
      if (err instanceof DirectoryError) {
        if (err.code === 'unknown_domain') throw new ApiError(404, 'no_such_domain', err.message);
        throw errors.badRequest(err.message);
      }
      ctx.logger.warn({ err }, 'DNS check failed');
      throw errors.unavailable();
    }
  };

  app.get('/api/admin/dns/domains/:domain', async (req): Promise<DnsDomainReport> => {
    const admin = await adminOf(req, ctx);
    const { domain } = parse(domainParam, req.params);
    const report = await run(() => opsFor(admin.account).checkDomainDns(domain, checker));
    if (report.records.every((r) => r.status === 'unchecked'))
      throw new ApiError(
        503,
        'dns_unavailable',
        `DNS could not be asked about ${report.domain} (${report.records[0]?.detail ?? 'no answer'}); try again shortly`,
      );
    return report;
  });

  /**
   * Ends the wait of a rotation: the pending key signs once DNS answers its record with the
   * same public key; 400 with what to publish otherwise, 503 when DNS cannot answer now.
   */
  app.post(
    '/api/admin/dkim/activate',
    adminRoute(ctx, async (req, { ops }): Promise<{ key: AdminDkimKey; activated: boolean }> => {
      const body = parse(z.object({ domain: domainSchema, selector: selectorSchema }), req.body);
      return ops.activateDkimKey(body.domain, body.selector, checker);
    }),
  );

  app.get('/api/admin/dns/server', async (req): Promise<DnsServerReport> => {
    const admin = await adminOf(req, ctx);
    return run(() => opsFor(admin.account).checkServerDns(checker));
  });
}
