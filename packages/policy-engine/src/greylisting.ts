import { createHash } from 'node:crypto';
import { ipInNetworks, ipToBigInt } from '@mailyard/config';
import type { PolicyReply } from '@mailyard/contracts';
import { PolicyKeys } from '@mailyard/policy-rules';
import { DUNNO, domainOf, note, refuse, type CheckContext, type Verdict } from './check-context.js';
import { dnsblLookup, dnsblName, hasFcrdns, lookupFcrdns } from './dns-checks.js';
import { spfOf } from './spf.js';

// Greylisting (postgrey's scheme over Redis, shared by every instance): the RCPT-stage
// checks check_policy_greylist and check_policy_greylist_suspicious, and the greylist
// band of check_spam at the end of DATA.

/** The /24 (IPv4) or /64 (IPv6) a client belongs to: greylisting treats a pool of senders as one. */
export function clientNetwork(ip: string): string {
  const a = ipToBigInt(ip);
  if (!a) return ip;
  const bits = a.family === 4 ? 8n : 64n;
  return `${a.family}:${((a.value >> bits) << bits).toString(16)}`;
}

/** A BATV tag value: key digit, 3-digit day, 6 of hash (draft-levine-smtp-batv); 9 long as some write it. */
const BATV_TAG = /^[0-9a-z]{9,10}$/;

/**
 * The envelope sender as a triplet holds it (postgrey's sender substitutions): lower
 * case; a BATV tag (`prvs=TAG=user@`, also written `prvs=user=TAG@`) and an SRS
 * forwarder's hash and day (`SRS0=HHHH=TT=domain=user@`) dropped; an extension (`+...`)
 * dropped; every number standing alone in the local part as `#`. Each of these changes
 * from one message (or one day) to the next for the same sender, so without this a
 * mailing list's per-message bounce address (VERP) or a daily BATV tag made every
 * message a new triplet, delayed again although the same sender passed before.
 */
export function greylistSender(sender: string): string {
  const at = sender.lastIndexOf('@');
  if (at === -1) return sender.toLowerCase();
  let user = sender.slice(0, at).toLowerCase();
  const domain = sender.slice(at + 1).toLowerCase();
  const prvs = /^prvs=([^=]+)=([^=]+)$/.exec(user);
  if (prvs) user = BATV_TAG.test(prvs[2]!) && !BATV_TAG.test(prvs[1]!) ? prvs[1]! : prvs[2]!;
  user = user
    .replace(/^srs0=[^=]+=[^=]+=/, 'srs0=')
    .replace(/^srs1=[^=]+=([^=]+)==[^=]+=[^=]+=/, 'srs1=$1==')
    .replace(/\+.*/, '')
    .replace(/\b\d+\b/g, '#');
  return `${user}@${domain}`;
}

/**
 * One greylisting decision in Redis for `material` (what makes a retry "the same
 * mail"), noted under `check`: 0 deferred (with the wait), else let through.
 */
async function tripletState(
  ctx: CheckContext,
  check: string,
  material: string,
  autoAllow: boolean,
  detail?: string,
): Promise<[number, number]> {
  const { config, redis } = ctx.env;
  const net = clientNetwork(ctx.req.client.ip);
  const triplet = createHash('sha256').update(`${net}\0${material}`).digest('hex').slice(0, 32);
  const key = PolicyKeys.greylistTriplet(triplet);
  const now = ctx.env.now();
  const found = await redis.policyGreylist(
    key,
    PolicyKeys.greylistClient(net),
    now,
    config.greylist_delay,
    config.greylist_pass_ttl,
    config.greylist_retry_window,
    autoAllow ? '1' : '0',
  );
  ctx.roundTrips++;
  const wait = found[1];
  let state = found[0];
  if (state === 4) {
    state = 0;
    // Redis at its maxmemory refuses it (the triplets are the clients' to make up): the
    // request is deferred as greylisting defers it anyway, and its retry counted from the
    // first one Redis takes
    await redis
      .set(key, String(now), 'PX', config.greylist_retry_window, 'NX')
      .catch((err: unknown) => ctx.env.logger.warn({ err }, 'greylisting triplet not stored'));
    ctx.roundTrips++;
  }
  note(ctx, check, ['deferred', 'known', 'auto-allowed', 'passed'][state] ?? 'unknown', detail);
  return [state, wait];
}

/**
 * Greylists the (client network, sender, recipient) triplet of a RCPT request;
 * `suspicious` says why the client was picked (check_policy_greylist_suspicious).
 */
export async function greylist(
  ctx: CheckContext,
  check: string,
  greylisted: (rcpt: string, seconds: number) => PolicyReply,
  suspicious?: string,
): Promise<Verdict> {
  const { req } = ctx;
  const { config, redis, resolver } = ctx.env;
  if (req.stage !== 'rcpt' || !req.recipient || req.sender === null) return DUNNO;
  if (config.greylist_auto_allow_authenticated && req.sender) {
    const domain = domainOf(req.sender);
    const known = await redis.exists(PolicyKeys.greylistAuthenticated(domain));
    ctx.roundTrips++;
    if (known && (await spfOf(ctx.env, req)) === 'pass') {
      note(ctx, check, 'auto-allowed-authenticated', domain);
      return DUNNO;
    }
  }
  // a known network lets FCrDNS clients through, but never past what made one suspicious
  const autoAllow =
    suspicious === undefined &&
    config.greylist_auto_allow_fcrdns &&
    (await hasFcrdns(resolver, req.client.ip));
  const [state, wait] = await tripletState(
    ctx,
    check,
    `${greylistSender(req.sender)}\0${req.recipient.toLowerCase()}`,
    autoAllow,
    suspicious,
  );
  if (state !== 0) return DUNNO;
  return refuse(greylisted(req.recipient, Math.ceil(wait / 1000)));
}

/**
 * Why this client should be greylisted, or null: no forward-confirmed reverse DNS (or
 * its lookup failed), or listed in one of GREYLIST_DNSBL. A client with FCrDNS whose
 * sender passes SPF is a real mail server sending its own domain's mail: never.
 */
export async function suspicion(ctx: CheckContext): Promise<string | null> {
  const { resolver, config } = ctx.env;
  const ip = ctx.req.client.ip;
  const f = await lookupFcrdns(resolver, ip);
  if (f.kind === 'temp') return 'FCrDNS lookup failed';
  if (f.kind === 'none' || f.value.confirmed === null) return 'no FCrDNS';
  for (const zone of config.greylist_dnsbl) {
    const name = dnsblName(ip, zone);
    const l = name ? await dnsblLookup(ctx.env, zone, name) : null;
    // a list refusing our queries (logged by the lookup) would otherwise greylist every
    // client it is asked about, for as long as the admin's resolver stays as it is
    if (!l || l.kind === 'none' || (l.kind === 'temp' && l.refused)) continue;
    if ((await spfOf(ctx.env, ctx.req)) === 'pass') return null;
    return l.kind === 'temp' ? `${zone} lookup failed` : `listed in ${zone}`;
  }
  return null;
}

/**
 * rspamd's greylist band (its `greylist` action) at end of DATA: the same greylisting,
 * keyed by client network, sender and recipients, answered 451 4.7.1 since DATA is
 * over. Our own users and networks, and clients with FCrDNS and SPF pass, are let
 * through (rspamd's own greylist module skips the first two as well).
 */
export async function greylistBand(
  ctx: CheckContext,
  greylisted: (seconds: number) => PolicyReply,
): Promise<Verdict> {
  const { req } = ctx;
  const { config, resolver } = ctx.env;
  if (req.user || ipInNetworks(req.client.ip, config.mynetworks) || req.sender === null) return DUNNO;
  if ((await hasFcrdns(resolver, req.client.ip)) && (ctx.spf ?? (await spfOf(ctx.env, req))) === 'pass') {
    note(ctx, 'greylist', 'skipped', 'rspamd band, FCrDNS and SPF pass');
    return DUNNO;
  }
  const rcpts = req.recipients.map((r) => r.toLowerCase()).sort();
  const [state, wait] = await tripletState(
    ctx,
    'greylist',
    `data\0${greylistSender(req.sender)}\0${rcpts.join('\0')}`,
    false,
    'rspamd band',
  );
  if (state !== 0) return DUNNO;
  return refuse(greylisted(Math.ceil(wait / 1000)));
}
