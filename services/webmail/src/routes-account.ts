import type { FastifyInstance } from 'fastify';
import QRCode from 'qrcode';
import { z } from 'zod';
import { announceRevocation, signOutEverywhere } from '@mailyard/auth';
import { DirectoryError } from '@mailyard/directory';
import {
  DEFAULT_REPLY_DAYS,
  MailRules,
  forwardingSchema,
  vacationSchema,
  type Forwarding,
  type Vacation,
} from '@mailyard/mail-rules';
import type { AccountInfo, PasswordChanged, TwoFactorEnrolment } from './api-types.js';
import { parse, sessionOf, type Ctx } from './context.js';
import { ApiError, errors } from './errors.js';
import { COOKIE_OPTIONS, SESSION_COOKIE } from './sessions.js';

const codeSchema = z.object({
  code: z.string({ message: 'expected the code' }).min(1, 'expected the code').max(64),
});
const passwordSchema = z.object({
  password: z.string({ message: 'expected your password' }).min(1, 'expected your password').max(1024),
});

/** An app password's name, as AppPasswords takes it; the admin console's revoke checks it too. */
export const appPasswordName = z.object({
  name: z
    .string({ message: 'expected a name' })
    .regex(/^[\w .@-]{1,64}$/, 'a name of 1-64 letters, digits, spaces or ._@-'),
});

/** The account page of every user: two-factor login, app passwords. */
export function registerAccountRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { logger } = ctx;
  /** The account's current password, asked again before a change that matters. */
  const checkPassword = async (ip: string, account: string, password: string) => {
    const res = await ctx.authenticator.authenticate({
      ip,
      username: account,
      password,
      secondFactorFollows: true,
      passwordOnly: true,
    });
    if (!res.ok && res.reason === 'locked') throw errors.locked(res.retryAfterSeconds);
    if (!res.ok && res.reason === 'unavailable') throw errors.unavailable();
    if (!res.ok || res.via !== 'password') throw errors.wrongPassword();
  };
  const rules = new MailRules(ctx.redis);
  const twoFactor = () => {
    if (!ctx.twoFactor) throw errors.notFound();
    return ctx.twoFactor;
  };

  app.get('/api/account/app-passwords', async (req) => {
    const { account } = sessionOf(req);
    return { appPasswords: await ctx.appPasswords.list(account) };
  });

  /**
   * A new app password, shown in this answer only. It asks for the password again: a
   * session left open must not hand out a credential that outlives it.
   */
  app.post('/api/account/app-passwords', async (req) => {
    const { account } = sessionOf(req);
    const { name, password } = parse(appPasswordName.extend(passwordSchema.shape), req.body);
    await checkPassword(req.ip, account, password);
    const secret = await refused(() => ctx.appPasswords.create(account, name));
    logger.info({ account, name }, 'app password created');
    return { name, secret };
  });

  /** Revoked: it logs in nowhere any more, and the sessions that logged in with it end. */
  app.post('/api/account/app-passwords/revoke', async (req) => {
    const { account } = sessionOf(req);
    const { name } = parse(appPasswordName, req.body);
    await refused(() => ctx.appPasswords.revoke(account, name));
    logger.info({ account, name }, 'app password revoked');
    return { revoked: name };
  });

  app.get('/api/account/logins', async (req) => {
    const { account } = sessionOf(req);
    return { logins: await ctx.history.list(account, 20) };
  });

  /** A new password, with the CLI's strength rules (the directory's), after the current one. */
  app.post('/api/account/password', async (req, reply) => {
    const session = sessionOf(req);
    const { account } = session;
    const body = parse(
      z.object({ current: passwordSchema.shape.password, password: passwordSchema.shape.password }),
      req.body,
    );
    await checkPassword(req.ip, account, body.current);
    try {
      await ctx.directory.setPassword(account, body.password);
    } catch (err) {
      throw refusal(err);
    }
    // on every instance the IMAP, POP3 and submission sessions that logged in with the old
    // password end: told first, so that a failure of what follows does not leave them open
    await announceRevocation(ctx.redis, account);
    // this session goes on under a new id and token (whoever holds a copy of the old cookie,
    // perhaps the reason for the change, is out); every other webmail session ends
    const { fresh, ended } = await ctx.sessions.endOthers(req.sessionId!, session, req.ip);
    logger.info({ account, ended, signedOut: !fresh }, 'password changed');
    // this session ended while the change ran (signed out everywhere): the password is
    // changed all the same, and the answer says so, with the login to go to
    if (!fresh) {
      void reply.clearCookie(SESSION_COOKIE, COOKIE_OPTIONS);
      return { changed: true, signedOut: true } satisfies PasswordChanged;
    }
    void reply.setCookie(SESSION_COOKIE, fresh.id, COOKIE_OPTIONS);
    return { changed: true, csrf: fresh.session.csrf } satisfies PasswordChanged;
  });

  /**
   * Ends every session of the account: its webmail sessions (this one too) and, on every
   * instance, its IMAP, POP3 and submission sessions, whatever they logged in with.
   */
  app.post('/api/account/sign-out-everywhere', async (req) => {
    const { account } = sessionOf(req);
    const ended = await ctx.sessions.destroyAll(account);
    await signOutEverywhere(ctx.redis, account);
    logger.info({ account, ended }, 'signed out everywhere');
    return { ended };
  });

  /** The out-of-office reply (delivery sends it; see services/delivery). */
  app.get('/api/account/vacation', async (req): Promise<Vacation> => {
    const { account } = sessionOf(req);
    const { vacation } = await rules.get(account);
    return (
      vacation ?? { enabled: false, subject: '', body: '', start: null, end: null, days: DEFAULT_REPLY_DAYS }
    );
  });

  app.post('/api/account/vacation', async (req): Promise<Vacation> => {
    const { account } = sessionOf(req);
    const vacation = parse(vacationSchema, req.body);
    await rules.setVacation(account, vacation);
    logger.info({ account, enabled: vacation.enabled }, 'out-of-office reply set');
    return vacation;
  });

  /** Forwarding (delivery sends it on; see services/delivery). */
  app.get('/api/account/forwarding', async (req): Promise<Forwarding> => {
    const { account } = sessionOf(req);
    const { forwarding } = await rules.get(account);
    return forwarding ?? { targets: [], keepCopy: true };
  });

  app.post('/api/account/forwarding', async (req): Promise<Forwarding> => {
    const { account } = sessionOf(req);
    const forwarding = parse(forwardingSchema, req.body);
    const own = new Set(await ctx.directory.addressesOf(account));
    // the account's own mailbox in any spelling too (the local part's case, a plus-address):
    // a forward there comes back and is filed a second time
    let self = forwarding.targets.find((t) => own.has(t.toLowerCase()));
    for (const t of forwarding.targets) if (!self && (await ctx.directory.leadsToAlone(t, account))) self = t;
    if (self) throw errors.badRequest(`targets: ${self} is this account's own address`);
    // an address in one of our domains that leads nowhere: every forward would bounce back,
    // and without a copy kept the mail would be in no mailbox
    for (const t of forwarding.targets) {
      const { localDomain, match } = await ctx.directory.lookup(t);
      if (localDomain && !match) throw errors.badRequest(`targets: ${t} does not exist`);
    }
    await rules.setForwarding(account, forwarding);
    logger.info({ account, targets: forwarding.targets.length }, 'forwarding set');
    return forwarding;
  });

  app.get('/api/account', async (req): Promise<AccountInfo> => {
    const { account } = sessionOf(req);
    const tf = ctx.twoFactor;
    const [admin, enabled, left] = await Promise.all([
      ctx.directory.isAdmin(account),
      tf ? tf.enabled(account) : false,
      tf ? tf.recoveryCodesLeft(account) : 0,
    ]);
    return { account, admin, twoFactor: { available: !!tf, enabled, recoveryCodesLeft: left } };
  });

  /**
   * Starts enrolment: a new secret, shown as a QR code; nothing changes until confirmed.
   * It asks for the password again: a session left open must not tie the account to
   * someone else's authenticator.
   */
  app.post('/api/account/two-factor/begin', async (req): Promise<TwoFactorEnrolment> => {
    const { account } = sessionOf(req);
    const { password } = parse(passwordSchema, req.body);
    const tf = twoFactor();
    await checkPassword(req.ip, account, password);
    if (await tf.enabled(account))
      throw errors.conflict('Two-factor login is already on; turn it off first to enrol again');
    const { secret, uri } = await tf.begin(account);
    return {
      secret,
      uri,
      qr: await QRCode.toDataURL(uri, { errorCorrectionLevel: 'M', margin: 1, scale: 6 }),
    };
  });

  /**
   * The first code from the app turns two-factor on; the recovery codes are shown this
   * once. As after a password change, this session goes on under a new id and token and
   * the account's other webmail sessions end: they passed with the password alone.
   */
  app.post('/api/account/two-factor/confirm', async (req, reply) => {
    const session = sessionOf(req);
    const { account } = session;
    const { code } = parse(codeSchema, req.body);
    const codes = await twoFactor()
      .confirm(account, code)
      .catch((err: unknown) => {
        throw refusal(err);
      });
    if (!codes) throw errors.invalidCode();
    const { fresh, ended } = await ctx.sessions.endOthers(req.sessionId!, session, req.ip);
    logger.info({ account, ended }, 'two-factor login turned on');
    // this session ended meanwhile: the codes are still shown, the next request logs in
    if (!fresh) return { recoveryCodes: codes };
    void reply.setCookie(SESSION_COOKIE, fresh.id, COOKIE_OPTIONS);
    return { recoveryCodes: codes, csrf: fresh.session.csrf };
  });

  /** Turning it off asks for the password again (a session left open must not do it). */
  app.post('/api/account/two-factor/disable', async (req) => {
    const { account } = sessionOf(req);
    const { password } = parse(passwordSchema, req.body);
    await checkPassword(req.ip, account, password);
    await twoFactor().disable(account);
    logger.info({ account }, 'two-factor login turned off');
    return { enabled: false };
  });
}

/** AppPasswords refuses what the user can fix (duplicate, limit, unknown name) with plain Errors. */
async function refused<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof Error && err.constructor === Error) {
      if (/^no app password/.test(err.message)) throw new ApiError(404, 'no_such_app_password', err.message);
      throw errors.conflict(err.message);
    }
    throw err;
  }
}

const capitalize = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);

/**
 * The directory's refusal of a change to this account as the answer: 404 when the account
 * was deleted while the request ran, else 400 (a weak password), with its sentence.
 */
function refusal(err: unknown): unknown {
  if (!(err instanceof DirectoryError)) return err;
  if (err.code === 'not_found') return new ApiError(404, 'not_found', capitalize(err.message));
  return errors.badRequest(capitalize(err.message));
}
