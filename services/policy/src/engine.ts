import { createHash, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { authenticate, spf as spfCheck } from 'mailauth';
import { ipInNetworks, ipToBigInt } from '@mailyard/config';
import {
  POLICY_VERSION,
  type PolicyDecision,
  type PolicyReason,
  type PolicyReply,
  type PolicyRequest,
} from '@mailyard/contracts';
import type { Directory } from '@mailyard/directory';
import type { MailResolver } from '@mailyard/dns';
import type { Logger } from '@mailyard/observability';
import {
  PolicyKeys,
  STAGE_LISTS,
  addressKeys,
  clientKeys,
  parseAccessAction,
  parseRate,
  type AccessAction,
  type Restriction,
  type RuleSet,
} from '@mailyard/policy-rules';
import { normalizeDomain } from '@mailyard/smtp-core';
import { clamdScan } from './clamd.js';
import type { PolicyConfig } from './config.js';
import {
  dnsblLookup,
  dnsblName,
  domainResolves,
  lookupFcrdns,
  lookupPtr,
  type Lookup,
} from './dns-checks.js';
import type { PolicyMetrics } from './metrics.js';
import { withPolicyScripts, type PolicyRedis } from './redis-scripts.js';
import { rspamdCheck } from './rspamd.js';

export interface EngineDeps {
  redis: Redis;
  directory: Directory;
  resolver: MailResolver;
  logger: Logger;
  metrics: PolicyMetrics;
  /** Current rules (reloaded live by the service). */
  rules: () => RuleSet;
  /** Milliseconds since the epoch; tests pass a controllable clock. */
  now: () => number;
}

type CheckResult =
  | { kind: 'dunno' }
  | { kind: 'permit' }
  | { kind: 'refuse'; action: 'reject' | 'tempfail'; reply: PolicyReply }
  | { kind: 'discard' }
  | { kind: 'hold' };

const DUNNO: CheckResult = { kind: 'dunno' };
const PERMIT: CheckResult = { kind: 'permit' };
const refuse = (code: number, enhanced: string, text: string): CheckResult => ({
  kind: 'refuse',
  action: code >= 500 ? 'reject' : 'tempfail',
  reply: { code, enhanced, text },
});

interface Ctx {
  req: PolicyRequest;
  message: Buffer | null;
  reasons: PolicyReason[];
  headers: { name: string; value: string }[];
  removeHeaders: { name: string; valuePrefix?: string }[];
  junkAll: boolean;
  junk: Set<string>;
  bulk: boolean;
  /** access table → first matching action text, looked up before the lists run */
  access: Map<string, string | null>;
  /** recipient → in its own allow / block list */
  allowed: Set<string>;
  blocked: Set<string>;
  spf: string | null;
  rspamdSymbols: string[];
  roundTrips: number;
}

const domainOf = (address: string): string => address.slice(address.lastIndexOf('@') + 1).toLowerCase();

/** The /24 (IPv4) or /64 (IPv6) a client belongs to: greylisting treats a pool of senders as one. */
export function clientNetwork(ip: string): string {
  const a = ipToBigInt(ip);
  if (!a) return ip;
  const bits = a.family === 4 ? 8n : 64n;
  return `${a.family}:${((a.value >> bits) << bits).toString(16)}`;
}

/**
 * Runs the restriction lists of one stage in order. The first decisive result wins;
 * `permit` ends the current list; HOLD marks the message for Junk and goes on.
 * Redis reads the lists need (access tables, user lists) are fetched in one pipeline
 * before the first check, so a stage costs one round trip plus one per greylist or
 * rate-limit check that is reached.
 */
export function createEngine(config: PolicyConfig, deps: EngineDeps) {
  const { directory, resolver, logger, metrics } = deps;
  const redis: PolicyRedis = withPolicyScripts(deps.redis);
  const authservId = config.authserv_id ?? config.myhostname;
  const relayDomains = new Set(config.relay_domains.map((d) => d.toLowerCase()));
  const filterTimeout = config.content_filter_timeout;

  const note = (ctx: Ctx, check: string, result: string, detail?: string, score?: number) => {
    metrics.checks.inc({ check, result });
    const r: PolicyReason = { check, result };
    if (detail !== undefined) r.detail = detail;
    if (score !== undefined) r.score = score;
    ctx.reasons.push(r);
  };

  const accessKey = (r: Restriction) => `${r.name}:${r.args[0]}`;

  /** One pipeline with everything the lists of this stage will read. */
  const prefetch = async (ctx: Ctx, lists: Restriction[]): Promise<void> => {
    const p = redis.pipeline();
    const reads: ((v: unknown) => void)[] = [];
    const { req } = ctx;
    for (const r of lists) {
      let keys: string[] = [];
      if (r.name === 'check_client_access') keys = clientKeys(req.client.ip);
      else if (r.name === 'check_sender_access' && req.sender !== null) keys = addressKeys(req.sender);
      else if (r.name === 'check_recipient_access' && req.recipient) keys = addressKeys(req.recipient);
      else continue;
      if (!keys.length || ctx.access.has(accessKey(r))) continue;
      const k = accessKey(r);
      ctx.access.set(k, null);
      p.hmget(PolicyKeys.access(r.args[0]!), ...keys);
      reads.push((v) => ctx.access.set(k, ((v as (string | null)[]) ?? []).find((x) => x !== null) ?? null));
    }
    const listRcpts =
      req.stage === 'rcpt' && req.recipient && lists.some((r) => r.name === 'check_user_lists')
        ? [req.recipient]
        : req.stage === 'data'
          ? req.recipients
          : [];
    if (req.sender && listRcpts.length) {
      const senderKeys = addressKeys(req.sender).filter((k) => !k.endsWith('@'));
      for (const rcpt of listRcpts) {
        for (const kind of ['allow', 'block'] as const) {
          p.smismember(PolicyKeys.userList(rcpt, kind), ...senderKeys);
          reads.push((v) => {
            if ((v as number[]).some((x) => x === 1))
              (kind === 'allow' ? ctx.allowed : ctx.blocked).add(rcpt);
          });
        }
      }
    }
    if (!reads.length) return;
    const res = await p.exec();
    ctx.roundTrips++;
    // an answer missing is a failure, never "no entry" (which reads as DUNNO)
    if (res?.length !== reads.length) throw new Error('incomplete answer from Redis');
    res.forEach(([err, v], i) => {
      if (err) throw err;
      reads[i]!(v);
    });
  };

  const fromAccess = (ctx: Ctx, r: Restriction, subject: string, what: string): CheckResult => {
    const text = ctx.access.get(accessKey(r));
    if (!text) return DUNNO;
    let a: AccessAction;
    try {
      a = parseAccessAction(text);
    } catch {
      logger.warn({ table: r.args[0], text }, 'bad action in access table, ignored');
      return DUNNO;
    }
    note(ctx, r.name, a.kind, `${r.args[0]}: ${text}`);
    switch (a.kind) {
      case 'permit':
        return PERMIT;
      case 'dunno':
        return DUNNO;
      case 'discard':
        return { kind: 'discard' };
      case 'hold':
        return { kind: 'hold' };
      case 'reject':
      case 'defer':
        return refuse(a.code, a.enhanced, `${subject}: ${what} rejected: ${a.text ?? 'Access denied'}`);
    }
  };

  const rate = async (ctx: Ctx, counter: string, spec: string): Promise<CheckResult> => {
    const { req } = ctx;
    const r = parseRate(spec)!;
    if (counter === 'message_recipients') {
      if (req.stage !== 'rcpt') return DUNNO;
      if (req.recipients.length + 1 > r.limit) {
        note(ctx, 'check_rate', 'over', `${counter} ${spec}`);
        return refuse(452, '4.5.3', 'Error: too many recipients');
      }
      return DUNNO;
    }
    let key: string | null = null;
    let text = '';
    if (counter === 'client_connections' && req.stage === 'connect') {
      key = req.client.ip;
      text = `Error: too many connections from [${req.client.ip}], try again later`;
    } else if (counter === 'client_messages' && req.stage === 'mail') {
      key = req.client.ip;
      text = `Error: too many messages from [${req.client.ip}], try again later`;
    } else if (counter === 'sender_domain_messages' && req.stage === 'mail' && req.sender) {
      key = domainOf(req.sender);
      text = `Error: too many messages from ${key}, try again later`;
    } else if (counter === 'user_recipients' && req.stage === 'rcpt' && req.user) {
      key = req.user.toLowerCase();
      text = `Error: ${key} sent to too many recipients, try again later`;
    }
    if (!key) return DUNNO;
    const now = deps.now();
    const n = await redis.policyRate(
      PolicyKeys.rate(counter, key),
      now,
      r.windowMs,
      r.limit,
      `${now}:${randomUUID()}`,
    );
    ctx.roundTrips++;
    if (n === -1) return DUNNO;
    note(ctx, 'check_rate', 'over', `${counter} ${n}/${spec}`);
    return refuse(450, '4.7.1', text);
  };

  /** SPF for the envelope sender and this client, without the message (before DATA). */
  const spfOf = async (req: PolicyRequest): Promise<string | undefined> => {
    if (!req.sender) return undefined;
    const r = await spfCheck({
      sender: req.sender,
      ip: req.client.ip.replace(/^::ffff:/i, ''),
      helo: req.client.helo || req.client.ip,
      mta: authservId,
      resolver: (name: string, type: string) => resolver.raw.resolve(name, type as 'TXT'),
    });
    return resultOf(r);
  };

  /** Forward-confirmed reverse DNS; a failed lookup counts as not confirmed. */
  const hasFcrdns = async (ip: string): Promise<boolean> => {
    const f = await lookupFcrdns(resolver, ip);
    return f.kind === 'found' && f.value.confirmed !== null;
  };

  /**
   * One greylisting decision in Redis for `material` (what makes a retry "the same
   * mail"), noted under `check`: 0 deferred (with the wait), else let through.
   */
  const tripletState = async (
    ctx: Ctx,
    check: string,
    material: string,
    autoAllow: boolean,
    detail?: string,
  ): Promise<[number, number]> => {
    const net = clientNetwork(ctx.req.client.ip);
    const triplet = createHash('sha256').update(`${net}\0${material}`).digest('hex').slice(0, 32);
    const [state, wait] = await redis.policyGreylist(
      PolicyKeys.greylistTriplet(triplet),
      PolicyKeys.greylistClient(net),
      deps.now(),
      config.greylist_delay,
      config.greylist_pass_ttl,
      config.greylist_retry_window,
      autoAllow ? '1' : '0',
    );
    ctx.roundTrips++;
    note(ctx, check, ['deferred', 'known', 'auto-allowed', 'passed'][state] ?? 'unknown', detail);
    return [state, wait];
  };

  const greylist = async (ctx: Ctx, check: string, suspicious?: string): Promise<CheckResult> => {
    const { req } = ctx;
    if (req.stage !== 'rcpt' || !req.recipient || req.sender === null) return DUNNO;
    if (config.greylist_auto_allow_authenticated && req.sender) {
      const domain = domainOf(req.sender);
      const known = await redis.exists(PolicyKeys.greylistAuthenticated(domain));
      ctx.roundTrips++;
      if (known && (await spfOf(req)) === 'pass') {
        note(ctx, check, 'auto-allowed-authenticated', domain);
        return DUNNO;
      }
    }
    // a known network lets FCrDNS clients through, but never past what made one suspicious
    const autoAllow =
      suspicious === undefined && config.greylist_auto_allow_fcrdns && (await hasFcrdns(req.client.ip));
    const [state, wait] = await tripletState(
      ctx,
      check,
      `${req.sender.toLowerCase()}\0${req.recipient.toLowerCase()}`,
      autoAllow,
      suspicious,
    );
    if (state !== 0) return DUNNO;
    return refuse(
      450,
      '4.7.1',
      `<${req.recipient}>: Recipient address rejected: Greylisted, try again in ${Math.ceil(wait / 1000)} seconds`,
    );
  };

  /**
   * Why this client should be greylisted, or null: no forward-confirmed reverse DNS (or
   * its lookup failed), or listed in one of GREYLIST_DNSBL. A client with FCrDNS whose
   * sender passes SPF is a real mail server sending its own domain's mail: never.
   */
  const suspicion = async (ctx: Ctx): Promise<string | null> => {
    const ip = ctx.req.client.ip;
    const f = await lookupFcrdns(resolver, ip);
    if (f.kind === 'temp') return 'FCrDNS lookup failed';
    if (f.kind === 'none' || f.value.confirmed === null) return 'no FCrDNS';
    for (const zone of config.greylist_dnsbl) {
      const name = dnsblName(ip, zone);
      const l = name ? await dnsblLookup(resolver, name) : null;
      if (!l || l.kind === 'none') continue;
      if ((await spfOf(ctx.req)) === 'pass') return null;
      return l.kind === 'temp' ? `${zone} lookup failed` : `listed in ${zone}`;
    }
    return null;
  };

  /**
   * rspamd's greylist band (its `greylist` action) at end of DATA: the same greylisting,
   * keyed by client network, sender and recipients, answered 451 4.7.1 since DATA is
   * over. Our own users and networks, and clients with FCrDNS and SPF pass, are let
   * through (rspamd's own greylist module skips the first two as well).
   */
  const greylistBand = async (ctx: Ctx): Promise<CheckResult> => {
    const { req } = ctx;
    if (req.user || ipInNetworks(req.client.ip, config.mynetworks) || req.sender === null) return DUNNO;
    if ((await hasFcrdns(req.client.ip)) && (ctx.spf ?? (await spfOf(req))) === 'pass') {
      note(ctx, 'greylist', 'skipped', 'rspamd band, FCrDNS and SPF pass');
      return DUNNO;
    }
    const rcpts = req.recipients.map((r) => r.toLowerCase()).sort();
    const [state, wait] = await tripletState(
      ctx,
      'greylist',
      `data\0${req.sender.toLowerCase()}\0${rcpts.join('\0')}`,
      false,
      'rspamd band',
    );
    if (state !== 0) return DUNNO;
    return refuse(
      451,
      '4.7.1',
      `Error: greylisted by the spam filter, try again in ${Math.ceil(wait / 1000)} seconds`,
    );
  };

  const filterFailed = (ctx: Ctx, scanner: 'clamd' | 'rspamd', err: unknown): CheckResult => {
    metrics.scannerErrors.inc({ scanner });
    logger.warn({ sid: ctx.req.sessionId, queueId: ctx.req.queueId, err }, `${scanner} failed`);
    note(
      ctx,
      scanner === 'clamd' ? 'check_virus' : 'check_spam',
      'error',
      String((err as Error).message ?? err),
    );
    if (config.content_filter_failure === 'tempfail')
      return refuse(451, '4.7.1', 'Error: content filter temporarily unavailable, try again later');
    ctx.headers.push({ name: `X-Mailyard-${scanner === 'clamd' ? 'Virus' : 'Spam'}-Scan`, value: 'failed' });
    return DUNNO;
  };

  const checkVirus = async (ctx: Ctx): Promise<CheckResult> => {
    if (!config.clamd_url || !ctx.message) return DUNNO;
    const end = metrics.scannerLatency.startTimer({ scanner: 'clamd' });
    try {
      const r = await clamdScan(config.clamd_url, ctx.message, filterTimeout);
      end();
      if (!r.infected) {
        note(ctx, 'check_virus', 'clean');
        return DUNNO;
      }
      note(ctx, 'check_virus', 'infected', r.signature);
      return refuse(
        554,
        '5.7.1',
        `Message rejected: virus found: ${r.signature.replace(/[^\x21-\x7e ]/g, '')}`,
      );
    } catch (err) {
      end();
      return filterFailed(ctx, 'clamd', err);
    }
  };

  const checkAuthentication = async (ctx: Ctx): Promise<CheckResult> => {
    const { req } = ctx;
    if (!ctx.message) return DUNNO;
    const raw = resolver.raw;
    const res = await authenticate(ctx.message, {
      ip: req.client.ip.replace(/^::ffff:/i, ''),
      helo: req.client.helo || undefined,
      sender: req.sender ?? '',
      mta: authservId,
      // mailauth's lookups go through our resolver too, timed and counted like the others
      resolver: async (name: string, type: string) => {
        const end = metrics.dnsLatency.startTimer({ type });
        try {
          return await raw.resolve(name, type as 'TXT');
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code !== 'ENOTFOUND' && code !== 'ENODATA') metrics.dnsFailures.inc({ type });
          throw err;
        } finally {
          end();
        }
      },
      disableBimi: true,
    });
    // forged results under our own name are removed (RFC 8601 §5); ours replace them
    ctx.removeHeaders.push({ name: 'Authentication-Results', valuePrefix: authservId });
    for (const h of res.headers.split(/\r\n(?![ \t])/)) {
      const i = h.indexOf(':');
      if (i > 0) ctx.headers.push({ name: h.slice(0, i), value: h.slice(i + 1).trim() });
    }
    const spf = resultOf(res.spf) ?? 'none';
    ctx.spf = spf;
    note(ctx, 'spf', spf);
    const dkim = (res.dkim?.results ?? []).map((r) => r.status?.result ?? 'none');
    if (config.greylist_auto_allow_authenticated && req.sender) {
      const domain = domainOf(req.sender);
      const dkimOk = (res.dkim?.results ?? []).some(
        (r) => r.status?.result === 'pass' && r.signingDomain?.toLowerCase() === domain,
      );
      if (spf === 'pass' || dkimOk) {
        await redis.set(PolicyKeys.greylistAuthenticated(domain), '1', 'PX', config.greylist_pass_ttl);
        ctx.roundTrips++;
      }
    }
    note(ctx, 'dkim', dkim.length ? dkim.join(',') : 'none');
    const arc = resultOf(res.arc);
    if (arc) note(ctx, 'arc', arc);
    const dmarc = res.dmarc as { status?: { result?: string }; policy?: string; domain?: string } | false;
    const dmarcResult = dmarc ? (dmarc.status?.result ?? 'none') : 'none';
    note(ctx, 'dmarc', dmarcResult, dmarc && dmarc.policy ? `p=${dmarc.policy}` : undefined);
    if (spf === 'temperror')
      return refuse(451, '4.7.24', 'Error: temporary SPF validation error, try again later');
    if (dmarcResult === 'temperror')
      return refuse(451, '4.7.1', 'Error: temporary DMARC validation error, try again later');
    if (dmarc && dmarcResult === 'fail') {
      // a signature whose key could not be looked up may well have passed: a DNS hiccup
      // must not turn into a permanent refusal (or Junk) of mail the sender signed
      if ((dmarc.policy === 'reject' || dmarc.policy === 'quarantine') && dkim.includes('temperror'))
        return refuse(451, '4.7.5', 'Error: temporary DKIM validation error, try again later');
      if (dmarc.policy === 'reject')
        return refuse(
          550,
          '5.7.1',
          `Message rejected: DMARC policy of ${dmarc.domain ?? 'the sender domain'} says reject`,
        );
      if (dmarc.policy === 'quarantine') return { kind: 'hold' };
    }
    return DUNNO;
  };

  const checkSpam = async (ctx: Ctx): Promise<CheckResult> => {
    const { req } = ctx;
    if (!config.rspamd_url || !ctx.message) return DUNNO;
    const end = metrics.scannerLatency.startTimer({ scanner: 'rspamd' });
    let r;
    try {
      // our Authentication-Results go along, so rspamd can use them
      const auth = ctx.headers.map((h) => `${h.name}: ${h.value}\r\n`).join('');
      r = await rspamdCheck(
        config.rspamd_url,
        Buffer.concat([Buffer.from(auth), ctx.message]),
        {
          ip: req.client.ip,
          helo: req.client.helo,
          hostname: req.client.hostname,
          from: req.sender ?? '',
          rcpts: req.recipients,
          queueId: req.queueId,
          user: req.user,
        },
        filterTimeout,
      );
      end();
    } catch (err) {
      end();
      return filterFailed(ctx, 'rspamd', err);
    }
    ctx.rspamdSymbols = Object.keys(r.symbols);
    const top = Object.entries(r.symbols)
      .sort((a, b) => Math.abs(b[1].score ?? 0) - Math.abs(a[1].score ?? 0))
      .slice(0, 8)
      .map(([n, s]) => `${n}(${(s.score ?? 0).toFixed(2)})`)
      .join(' ');
    note(ctx, 'check_spam', r.action, top, r.score);
    const spam = r.action !== 'no action' && r.action !== 'greylist' && r.action !== 'soft reject';
    ctx.headers.push({ name: 'X-Spam', value: spam ? 'Yes' : 'No' });
    ctx.headers.push({
      name: 'X-Spam-Score',
      value: `${r.score.toFixed(2)} / ${r.required_score.toFixed(2)}`,
    });
    switch (r.action) {
      case 'reject':
        if (config.rspamd_reject_action === 'reject') return refuse(554, '5.7.1', 'Message rejected as spam');
        return { kind: 'hold' };
      case 'soft reject':
        return refuse(451, '4.7.1', 'Error: try again later');
      case 'greylist':
        return greylistBand(ctx);
      case 'add header':
      case 'rewrite subject':
        return { kind: 'hold' };
      default:
        return DUNNO;
    }
  };

  const checkBulk = (ctx: Ctx): CheckResult => {
    if (!ctx.message) return DUNNO;
    const head = headerBlock(ctx.message);
    const why: string[] = [];
    if (/^list-unsubscribe:/im.test(head)) why.push('List-Unsubscribe');
    if (/^precedence:[ \t]*(bulk|junk)\b/im.test(head)) why.push('Precedence');
    for (const s of ctx.rspamdSymbols) if (/BULK|MAILCHIMP|NEWSLETTER/.test(s)) why.push(s);
    if (why.length) {
      ctx.bulk = true;
      ctx.headers.push({ name: 'X-Mailyard-Bulk', value: 'yes' });
      note(ctx, 'check_bulk', 'bulk', why.join(' '));
    }
    return DUNNO;
  };

  const run = async (ctx: Ctx, r: Restriction): Promise<CheckResult> => {
    const { req } = ctx;
    const ip = req.client.ip;
    const helo = req.client.helo;
    switch (r.name) {
      case 'permit':
        return PERMIT;
      case 'reject':
        note(ctx, 'reject', 'reject');
        return refuse(554, '5.7.1', 'Error: access denied');
      case 'defer':
        note(ctx, 'defer', 'defer');
        return refuse(450, '4.7.1', 'Error: try again later');
      case 'permit_mynetworks':
        return ipInNetworks(ip, config.mynetworks) ? PERMIT : DUNNO;
      case 'permit_sasl_authenticated':
        return req.user ? PERMIT : DUNNO;
      case 'reject_unauth_destination': {
        if (req.stage !== 'rcpt' || !req.recipient) return DUNNO;
        const d = domainOf(req.recipient);
        if (relayDomains.has(d)) return DUNNO;
        const local = await directory.isLocalDomain(d);
        ctx.roundTrips++;
        if (local) return DUNNO;
        note(ctx, r.name, 'reject', d);
        return refuse(554, '5.7.1', `<${req.recipient}>: Relay access denied`);
      }
      case 'reject_unknown_reverse_client_hostname': {
        const l = await lookupPtr(resolver, ip);
        return dnsVerdict(ctx, r.name, l, () =>
          refuse(550, '5.7.25', `Client host rejected: cannot find your reverse hostname, [${ip}]`),
        );
      }
      case 'reject_unknown_client_hostname': {
        const l = await lookupFcrdns(resolver, ip);
        const v: Lookup<true> =
          l.kind === 'found' ? (l.value.confirmed ? { kind: 'found', value: true } : { kind: 'none' }) : l;
        return dnsVerdict(ctx, r.name, v, () =>
          refuse(550, '5.7.25', `Client host rejected: cannot find your hostname, [${ip}]`),
        );
      }
      case 'reject_invalid_helo_hostname': {
        if (req.stage === 'connect') return DUNNO;
        const literal =
          /^\[(?:IPv6:)?[0-9A-Fa-f:.]+\]$/.test(helo) && ipToBigInt(helo.slice(1, -1).replace(/^IPv6:/i, ''));
        if (helo && (literal || normalizeDomain(helo))) return DUNNO;
        note(ctx, r.name, 'reject', helo);
        return refuse(501, '5.5.2', `<${helo}>: Helo command rejected: Invalid name`);
      }
      case 'reject_non_fqdn_helo_hostname': {
        if (req.stage === 'connect' || !helo || helo.startsWith('[')) return DUNNO;
        if (helo.replace(/\.$/, '').includes('.')) return DUNNO;
        note(ctx, r.name, 'reject', helo);
        return refuse(504, '5.5.2', `<${helo}>: Helo command rejected: need fully-qualified hostname`);
      }
      case 'reject_non_fqdn_sender':
        if (!req.sender) return DUNNO;
        if (domainOf(req.sender).includes('.') || domainOf(req.sender).startsWith('[')) return DUNNO;
        note(ctx, r.name, 'reject', req.sender);
        return refuse(504, '5.5.2', `<${req.sender}>: Sender address rejected: need fully-qualified address`);
      case 'reject_non_fqdn_recipient':
        if (!req.recipient || req.stage !== 'rcpt') return DUNNO;
        if (domainOf(req.recipient).includes('.') || domainOf(req.recipient).startsWith('[')) return DUNNO;
        note(ctx, r.name, 'reject', req.recipient);
        return refuse(
          504,
          '5.5.2',
          `<${req.recipient}>: Recipient address rejected: need fully-qualified address`,
        );
      case 'reject_unknown_sender_domain': {
        if (!req.sender || domainOf(req.sender).startsWith('[')) return DUNNO;
        // as Postfix: not for the domains we are final destination for, whose mail must
        // keep flowing when their own DNS is broken or not published yet
        const own = await directory.isLocalDomain(domainOf(req.sender));
        ctx.roundTrips++;
        if (own) return DUNNO;
        const l = await domainResolves(resolver, domainOf(req.sender));
        const s = req.sender;
        if (l.kind === 'temp') {
          note(ctx, r.name, 'temperror', l.error);
          return refuse(
            450,
            '4.1.8',
            `<${s}>: Sender address rejected: Domain not found (temporary DNS failure)`,
          );
        }
        return dnsVerdict(ctx, r.name, l, () =>
          refuse(550, '5.1.8', `<${s}>: Sender address rejected: Domain not found`),
        );
      }
      case 'check_client_access':
        return fromAccess(ctx, r, `${req.client.hostname ?? 'unknown'}[${ip}]`, 'Client host');
      case 'check_sender_access':
        return req.sender === null ? DUNNO : fromAccess(ctx, r, `<${req.sender}>`, 'Sender address');
      case 'check_recipient_access':
        return req.recipient ? fromAccess(ctx, r, `<${req.recipient}>`, 'Recipient address') : DUNNO;
      case 'reject_rbl_client':
      case 'reject_rhsbl_sender': {
        const [zone, want] = r.args[0]!.split('=') as [string, string | undefined];
        let name: string | null;
        let subject: string;
        if (r.name === 'reject_rbl_client') {
          name = dnsblName(ip, zone);
          subject = `Client host [${ip}]`;
        } else {
          if (!req.sender) return DUNNO;
          name = `${domainOf(req.sender)}.${zone}`;
          subject = `Sender address <${req.sender}>`;
        }
        if (!name) return DUNNO;
        const l = await dnsblLookup(resolver, name);
        if (l.kind === 'none') return DUNNO;
        if (l.kind === 'temp') {
          note(ctx, r.name, 'temperror', `${zone}: ${l.error}`);
          return refuse(
            450,
            '4.7.1',
            `Service temporarily unavailable: ${zone} lookup failed, try again later`,
          );
        }
        const codes = want ? l.value.filter((c) => c === want) : l.value;
        if (!codes.length) return DUNNO;
        note(ctx, r.name, 'listed', `${zone}=${codes.join(',')}`);
        return refuse(
          554,
          '5.7.1',
          `Service unavailable; ${subject} blocked using ${zone} (${codes.join(',')})`,
        );
      }
      case 'check_policy_greylist':
        return greylist(ctx, r.name);
      case 'check_policy_greylist_suspicious': {
        if (req.stage !== 'rcpt' || !req.recipient || req.sender === null) return DUNNO;
        const why = await suspicion(ctx);
        if (why) return greylist(ctx, r.name, why);
        note(ctx, r.name, 'trusted');
        return DUNNO;
      }
      case 'check_rate':
        return rate(ctx, r.args[0]!, r.args[1]!);
      case 'check_user_lists': {
        if (req.stage !== 'rcpt' || !req.recipient) return DUNNO;
        if (ctx.blocked.has(req.recipient)) {
          note(ctx, r.name, 'blocked', req.sender ?? '');
          return refuse(
            550,
            '5.7.1',
            `<${req.recipient}>: Recipient address rejected: sender blocked by the recipient`,
          );
        }
        if (ctx.allowed.has(req.recipient)) {
          note(ctx, r.name, 'allowed', req.sender ?? '');
          return PERMIT;
        }
        return DUNNO;
      }
      case 'check_virus':
        return req.stage === 'data' ? checkVirus(ctx) : DUNNO;
      case 'check_authentication':
        // SPF/DMARC judge the path from the sender's domain to us; a submitting user's
        // own IP says nothing about that (their home address would fail their domain's SPF)
        if (req.user) return DUNNO;
        return req.stage === 'data' ? checkAuthentication(ctx) : DUNNO;
      case 'reject_spf_fail':
        if (ctx.spf !== 'fail') return DUNNO;
        note(ctx, r.name, 'reject');
        return refuse(550, '5.7.23', 'Message rejected: SPF validation failed');
      case 'check_spam':
        return req.stage === 'data' ? checkSpam(ctx) : DUNNO;
      case 'check_bulk':
        return req.stage === 'data' ? checkBulk(ctx) : DUNNO;
      default:
        logger.warn({ restriction: (r as Restriction).name }, 'restriction not applicable, ignored');
        return DUNNO;
    }
  };

  const dnsVerdict = (
    ctx: Ctx,
    check: string,
    l: Lookup<unknown>,
    onNone: () => CheckResult,
  ): CheckResult => {
    if (l.kind === 'found') return DUNNO;
    if (l.kind === 'temp') {
      note(ctx, check, 'temperror', l.error);
      return refuse(
        450,
        '4.7.25',
        `Error: temporary DNS failure while checking [${ctx.req.client.ip}], try again later`,
      );
    }
    note(ctx, check, 'reject');
    return onNone();
  };

  /** Decides one request. Never throws: an internal error becomes a tempfail. */
  async function decide(
    req: PolicyRequest,
    message: Buffer | null,
  ): Promise<PolicyDecision & { roundTrips: number }> {
    const ctx: Ctx = {
      req,
      message,
      reasons: [],
      headers: [],
      removeHeaders: [],
      junkAll: false,
      junk: new Set(),
      bulk: false,
      access: new Map(),
      allowed: new Set(),
      blocked: new Set(),
      spf: null,
      rspamdSymbols: [],
      roundTrips: 0,
    };
    const rules = deps.rules();
    const lists = STAGE_LISTS[req.stage];
    let verdict: CheckResult = DUNNO;
    try {
      await prefetch(
        ctx,
        lists.flatMap((l) => rules[l]),
      );
      outer: for (const l of lists) {
        for (const r of rules[l]) {
          const res = await run(ctx, r);
          if (res.kind === 'dunno') continue;
          if (res.kind === 'permit') continue outer;
          if (res.kind === 'hold') {
            ctx.junkAll = true;
            continue;
          }
          verdict = res;
          break outer;
        }
      }
    } catch (err) {
      logger.error({ sid: req.sessionId, queueId: req.queueId, err }, 'policy check failed');
      note(ctx, 'policy', 'error', String((err as Error).message ?? err));
      verdict = refuse(451, '4.3.0', 'Error: local error in policy processing, try again later');
    }
    const base: Omit<PolicyDecision, 'action' | 'reply'> & { roundTrips: number } = {
      v: POLICY_VERSION,
      reasons: ctx.reasons,
      headers: [],
      removeHeaders: [],
      junk: [],
      bulk: ctx.bulk,
      roundTrips: ctx.roundTrips,
    };
    if (verdict.kind === 'refuse') return { ...base, action: verdict.action, reply: verdict.reply };
    if (verdict.kind === 'discard') return { ...base, action: 'discard', reply: null };
    if (req.stage === 'data') {
      const junk = ctx.junkAll ? req.recipients.filter((r) => !ctx.allowed.has(r)) : [];
      const summary = ctx.reasons
        .map((r) => `${r.check}=${r.result}${r.detail ? ` (${r.detail.replace(/[\r\n;]/g, ' ')})` : ''}`)
        .join('; ');
      const headers = [
        {
          name: 'X-Mailyard-Policy',
          value: `${junk.length ? 'junk' : 'inbox'}; ${summary || 'no checks fired'}`,
        },
        ...ctx.headers,
      ];
      return {
        ...base,
        action: junk.length ? 'quarantine' : 'continue',
        reply: null,
        headers,
        removeHeaders: [{ name: 'X-Mailyard-Policy' }, { name: 'X-Mailyard-Bulk' }, ...ctx.removeHeaders],
        junk,
      };
    }
    if (ctx.junkAll) {
      return { ...base, action: 'quarantine', reply: null, junk: req.recipient ? [req.recipient] : [] };
    }
    return { ...base, action: 'continue', reply: null };
  }

  return { decide };
}
export type Engine = ReturnType<typeof createEngine>;

function headerBlock(message: Buffer): string {
  const end = message.indexOf('\r\n\r\n');
  return message.subarray(0, end === -1 ? Math.min(message.length, 65536) : end).toString('latin1');
}

function resultOf(r: unknown): string | undefined {
  if (!r || typeof r !== 'object') return undefined;
  const status = (r as { status?: { result?: unknown } }).status;
  return typeof status?.result === 'string' ? status.result : undefined;
}
