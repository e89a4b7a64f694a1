import type { FastifyInstance } from 'fastify';
import { clientKey } from '@mailyard/auth';
import { accountAddress } from '@mailyard/directory';
import { z } from 'zod';
import { parse, sessionOf, type Ctx } from './context.js';
import { errors } from './errors.js';
import { COOKIE_OPTIONS as COOKIE, LOGIN_COOKIE, SESSION_COOKIE, newToken } from './sessions.js';

/** The body of a login step: an address and a password (each of bounded length), or a code. */
const LOGIN_BODY_LIMIT = 16 * 1024;

const loginSchema = z.object({
  username: z.string({ message: 'expected your address' }).min(1, 'expected your address').max(320),
  password: z.string({ message: 'expected your password' }).min(1, 'expected your password').max(1024),
});

/**
 * Logins per client per minute, whatever their outcome (the shared lockout in
 * packages/auth counts only failures, per address and per account, across every protocol).
 * A client is counted as the lockout counts it: an IPv6 one by its /64.
 */
async function rateLimited(ctx: Ctx, ip: string): Promise<number> {
  const key = `webmail:login-rate:${clientKey(ip)}`;
  const [[, count], [, ttl]] = (await ctx.redis.multi().incr(key).pttl(key).exec()) as [
    [null, number],
    [null, number],
  ];
  if (ttl < 0) await ctx.redis.pexpire(key, 60_000);
  return count > ctx.config.login_rate_limit ? Math.max(1, Math.ceil((ttl < 0 ? 60_000 : ttl) / 1000)) : 0;
}

export function registerAuthRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { sessions, metrics, logger } = ctx;
  const limits = () => ({ attachments: ctx.attachmentLimit });

  /** Who is logged in; before login, the token the login form must send back (double submit). */
  app.get('/api/session', { config: { access: 'public' } }, async (req, reply) => {
    const session = await sessions.get(req.cookies[SESSION_COOKIE], req.ip);
    // a logged-in page may log in again (as someone else): it gets the token too
    const existing = req.cookies[LOGIN_COOKIE];
    const loginToken = existing && /^[\w-]{43}$/.test(existing) ? existing : newToken();
    void reply.setCookie(LOGIN_COOKIE, loginToken, COOKIE);
    if (session?.stage === 'complete') {
      return {
        authenticated: true,
        account: session.account,
        csrf: session.csrf,
        loginToken,
        limits: limits(),
      };
    }
    if (session?.stage === 'second-factor') {
      return {
        authenticated: false,
        next: 'second-factor',
        account: session.account,
        csrf: session.csrf,
        loginToken,
      };
    }
    return { authenticated: false, loginToken };
  });

  // an address and a password, or a code: anything bigger is read by no one logged in
  app.post('/api/login', { bodyLimit: LOGIN_BODY_LIMIT, config: { access: 'login' } }, async (req, reply) => {
    const { username, password } = parse(loginSchema, req.body);
    const wait = await rateLimited(ctx, req.ip);
    if (wait) {
      metrics.logins.inc({ result: 'rate_limited' });
      throw errors.rateLimited(wait);
    }
    // the account's webmail sign-out count and creation time before its password is checked:
    // an ending of its sessions (sign out everywhere, a new password), or the account deleted
    // and made again, while the check runs ends this one too
    const named = accountAddress(username) ?? username.trim().toLowerCase();
    const stamp = await sessions.loginStamp(named);
    // the second step, when the account has one, is asked below
    const res = await ctx.authenticator.authenticate({
      ip: req.ip,
      username,
      password,
      secondFactorFollows: true,
      // app passwords are for mail clients; the webmail asks for the account's own password
      // (so that a second step, when an account has one, cannot be skipped with one)
      passwordOnly: true,
      protocol: 'webmail',
      client: String(req.headers['user-agent'] ?? ''),
    });
    if (!res.ok || res.via !== 'password') {
      const reason = res.ok ? 'invalid' : res.reason;
      metrics.logins.inc({ result: reason });
      logger.info({ user: username.slice(0, 100), ip: req.ip, reason }, 'webmail login refused');
      if (!res.ok && res.reason === 'locked') throw errors.locked(res.retryAfterSeconds);
      // the directory or the lockout could not be read: say so, never "wrong password"
      if (!res.ok && res.reason === 'unavailable') throw errors.unavailable();
      throw errors.invalidCredentials();
    }
    const second = ctx.secondFactor ? await ctx.secondFactor.enabled(res.account) : false;
    // the session this browser held (an earlier login, perhaps of another account, or one
    // planted in it) ends now rather than at its timeout: the new login replaces it (a
    // renewed session's old id ends only when this is its client's address)
    await sessions.destroy(req.cookies[SESSION_COOKIE], req.ip);
    const { id, session } = await sessions.create(
      res.account,
      second ? 'second-factor' : 'complete',
      res.account === named ? stamp : await sessions.loginStamp(res.account),
    );
    void reply.setCookie(SESSION_COOKIE, id, COOKIE).clearCookie(LOGIN_COOKIE, COOKIE);
    metrics.logins.inc({ result: second ? 'second_factor' : 'ok' });
    logger.info({ account: res.account, ip: req.ip }, second ? 'webmail password accepted' : 'webmail login');
    if (second)
      return { authenticated: false, next: 'second-factor', account: res.account, csrf: session.csrf };
    // the first screen needs an IMAP connection: open it while the page loads
    ctx.pool.run(res.account, async () => undefined).catch(() => undefined);
    return { authenticated: true, account: res.account, csrf: session.csrf, limits: limits() };
  });

  /** The second step: a TOTP code or a recovery code; present only when the platform has one. */
  app.post(
    '/api/login/second-factor',
    { bodyLimit: LOGIN_BODY_LIMIT, config: { access: 'partial' } },
    async (req, reply) => {
      const session = sessionOf(req);
      if (!ctx.secondFactor || session.stage !== 'second-factor') throw errors.notFound();
      const { code } = parse(z.object({ code: z.string().min(1, 'expected the code').max(64) }), req.body);
      const wait = await rateLimited(ctx, req.ip);
      if (wait) throw errors.rateLimited(wait);
      const res = await ctx.secondFactor.verify(session.account, code, req.ip);
      if (!res.ok) {
        metrics.logins.inc({ result: res.reason });
        logger.info(
          { account: session.account, ip: req.ip, reason: res.reason },
          'webmail second step refused',
        );
        if (res.reason === 'locked') throw errors.locked(res.retryAfterSeconds);
        if (res.reason === 'too-many-codes') {
          // this login ends: whoever guesses must give the password again for more
          await sessions.destroy(req.sessionId ?? undefined);
          void reply.clearCookie(SESSION_COOKIE, COOKIE);
          throw errors.tooManyCodes();
        }
        throw errors.invalidCode();
      }
      const fresh = await sessions.rotate(req.sessionId!, { ...session, stage: 'complete' });
      // signed out everywhere (or locked) while the code was checked: no login
      if (!fresh) throw errors.notLoggedIn();
      logger.info({ account: session.account, ip: req.ip, via: res.via }, 'webmail login');
      void reply.setCookie(SESSION_COOKIE, fresh.id, COOKIE);
      metrics.logins.inc({ result: 'ok' });
      return { authenticated: true, account: session.account, csrf: fresh.session.csrf, limits: limits() };
    },
  );

  app.post('/api/logout', { config: { access: 'partial' } }, async (req, reply) => {
    await sessions.destroy(req.sessionId ?? undefined);
    void reply.clearCookie(SESSION_COOKIE, COOKIE);
    logger.info({ account: sessionOf(req).account }, 'webmail logout');
    return { authenticated: false };
  });
}
