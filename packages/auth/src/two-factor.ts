import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import { DirectoryError } from '@mailyard/directory';
import type { LoginGuard } from './lockout.js';
import { revocationMessage, revokedChannel } from './revocations.js';

/** How many recovery codes enrolment hands out; each works once. */
export const RECOVERY_CODES = 10;
/** How long a started enrolment waits for its first code. */
const ENROLMENT_SECONDS = 600;
/** Codes of the step before and after are accepted too (clocks drift; RFC 6238 §5.2). */
const TOLERANCE_SECONDS = 30;
const RECOVERY_ALPHABET = 'abcdefghijkmnpqrstuvwxyz23456789';
/** Imported at the first enrolment or code: a `mailyard` command does not load it at start. */
const otplib = () => import('otplib');
/**
 * Wrong codes in a row for one account, from any address, after which its TOTP codes are
 * no longer checked: six digits are guessable, and the per-address lockout alone lets a
 * guesser spread over many addresses go on (NIST SP 800-63B §5.2.2: at most 100).
 */
export const MAX_CODE_FAILURES = 10;
/**
 * The wrong codes are forgotten this long after the last one, or at the next right code;
 * once MAX_CODE_FAILURES is reached, this long after that (later inputs do not extend it).
 */
const CODE_FAILURE_SECONDS = 15 * 60;

export type SecondFactorResult =
  | { ok: true; via: 'totp' | 'recovery-code' }
  | { ok: false; reason: 'invalid' }
  | { ok: false; reason: 'locked'; retryAfterSeconds: number }
  /** MAX_CODE_FAILURES wrong codes in a row: the login starts again from the password. */
  | { ok: false; reason: 'too-many-codes' };

/** The keys of an account's recovery codes and of an enrolment under way, which go with the account. */
export const twoFactorKeys = (account: string) => [
  `totp:recovery:${account.toLowerCase()}`,
  `totp:pending:${account.toLowerCase()}`,
  `totp:fail:${account.toLowerCase()}`,
  `totp:fail-cap:${account.toLowerCase()}`,
];

// KEYS: account:<a>, totp:recovery:<a>, totp:pending:<a>; ARGV: the secret, the revocation
// channel and message, the recovery codes' hashes. Two-factor is turned on only while the
// account is there (its record has a password), in the step that checks it: a deletion in
// between would otherwise leave a record of the secret alone, an account without a
// password that refuses a new one of the address. 0: no such account.
const CONFIRM = `
if redis.call('HEXISTS', KEYS[1], 'password') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'totp', ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('SADD', KEYS[2], unpack(ARGV, 4))
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1`;

// KEYS: the account's record, then its two-factor keys. A script, not a MULTI: Redis at its
// maxmemory refuses every command queued in a MULTI, deletions too, and turning it off
// (the owner, or an administrator's reset for one who lost the authenticator) must work then.
const DISABLE = `
redis.call('HDEL', KEYS[1], 'totp')
redis.call('DEL', unpack(KEYS, 2))`;

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** A recovery code as typed: lower case, without spaces or dashes. */
const normalizeRecovery = (code: string) => code.toLowerCase().replace(/[\s-]/g, '');

/**
 * TOTP two-factor login (RFC 6238: SHA-1, 6 digits, 30 s, as every authenticator app) with
 * single-use recovery codes. The secret lives in the account's own record (field `totp`),
 * so turning two-factor on or off changes the record, which ends every cached password
 * login (CredentialCache compares the record) and is what the authenticator reads to
 * refuse the account password to IMAP, POP3 and submission.
 *
 *   account:<a>            HASH field `totp`: the base32 secret, while two-factor is on
 *   totp:pending:<a>       STRING the secret of an enrolment not yet confirmed (10 min)
 *   totp:recovery:<a>      SET    SHA-256 of the unused recovery codes
 *   totp:used:<a>:<step>   STRING a code's time step once used (refuses its replay)
 *   totp:fail:<a>          STRING wrong TOTP codes in a row (15 min after the last one)
 *   totp:fail-cap:<a>      STRING when (ms) the count reached MAX_CODE_FAILURES (15 min)
 *
 * Wrong codes count in the shared lockout (LoginGuard) under the client address and the
 * account, as wrong passwords do, so guessing the six digits is throttled the same way.
 * Past MAX_CODE_FAILURES wrong TOTP codes in a row for the account, from any addresses,
 * TOTP codes are refused unchecked until a right recovery code or CODE_FAILURE_SECONDS
 * from reaching the cap (whatever is typed meanwhile), and the caller
 * ends the login under way: the password is asked again. That count is not the
 * lockout's: the account's password logins are not held back by it, and recovery codes
 * (50 random bits, not guessable) are still checked, so its owner always has a way in.
 */
export class TwoFactor {
  constructor(
    private readonly redis: Redis,
    private readonly guard: LoginGuard,
    private readonly opts: { issuer?: string; now?: () => number } = {},
  ) {}

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  async enabled(account: string): Promise<boolean> {
    return !!(await this.redis.hget(`account:${account.toLowerCase()}`, 'totp'));
  }

  /** Recovery codes not used yet. */
  async recoveryCodesLeft(account: string): Promise<number> {
    return this.redis.scard(`totp:recovery:${account.toLowerCase()}`);
  }

  /** Starts enrolment: a new secret, and the otpauth:// URI for the QR code. */
  async begin(account: string): Promise<{ secret: string; uri: string }> {
    const a = account.toLowerCase();
    const { generateSecret, generateURI } = await otplib();
    const secret = generateSecret();
    await this.redis.set(`totp:pending:${a}`, secret, 'EX', ENROLMENT_SECONDS);
    const uri = generateURI({ issuer: this.opts.issuer ?? 'Mailyard', label: a, secret });
    return { secret, uri };
  }

  /**
   * Ends enrolment with a first code from the app (proof that it has the secret): turns
   * two-factor on and returns the recovery codes, shown once. Null when the code is wrong
   * or no enrolment is waiting; a DirectoryError (not_found) when the account was deleted
   * meanwhile.
   */
  async confirm(account: string, code: string): Promise<string[] | null> {
    const a = account.toLowerCase();
    const secret = await this.redis.get(`totp:pending:${a}`);
    if (!secret || !(await this.checkCode(a, secret, code))) return null;
    const codes = Array.from({ length: RECOVERY_CODES }, () =>
      [...randomBytes(10)].map((b) => RECOVERY_ALPHABET[b % RECOVERY_ALPHABET.length]).join(''),
    );
    // the IMAP, POP3 and submission sessions that logged in with the password end,
    // everywhere: announced with the change, so that two-factor is never on while the
    // codes, kept only as hashes, go unshown for a failed announcement
    const on = await this.redis.eval(
      CONFIRM,
      3,
      `account:${a}`,
      `totp:recovery:${a}`,
      `totp:pending:${a}`,
      secret,
      revokedChannel(this.redis),
      revocationMessage(a),
      ...codes.map(sha256),
    );
    if (on === 0) throw new DirectoryError('not_found', `account ${a} does not exist`);
    return codes.map((c) => `${c.slice(0, 5)}-${c.slice(5)}`);
  }

  /**
   * Turns two-factor off (the user, or an administrator's reset). The wrong codes counted
   * go too: they were typed for this secret, and must not refuse the next one's codes.
   */
  async disable(account: string): Promise<void> {
    const a = account.toLowerCase();
    await this.redis.eval(DISABLE, 1 + twoFactorKeys(a).length, `account:${a}`, ...twoFactorKeys(a));
  }

  /**
   * The second step of a login: a current TOTP code not used before, or an unused
   * recovery code (which is then used up). Refused without looking while the client's
   * address is locked; a wrong code counts as a failed login.
   */
  async verify(account: string, code: string, ip: string): Promise<SecondFactorResult> {
    const a = account.toLowerCase();
    const failKey = `totp:fail:${a}`;
    const capKey = `totp:fail-cap:${a}`;
    const lock = await this.guard.check(ip, a);
    if (lock.verdict === 'refuse')
      return { ok: false, reason: 'locked', retryAfterSeconds: lock.retryAfterSeconds };
    const [secret, failures, cappedAt] = await Promise.all([
      this.redis.hget(`account:${a}`, 'totp'),
      this.redis.get(failKey),
      this.redis.get(capKey),
    ]);
    const totp = /^\s*\d{6}\s*$/.test(code);
    if (secret) {
      if (totp) {
        if (Number(failures) >= MAX_CODE_FAILURES) {
          if (!cappedAt || this.now() - Number(cappedAt) < CODE_FAILURE_SECONDS * 1000)
            return { ok: false, reason: 'too-many-codes' };
          await this.redis.del(failKey, capKey);
        }
        if (await this.checkCode(a, secret, code)) {
          await this.succeeded(ip, a);
          return { ok: true, via: 'totp' };
        }
      } else if (await this.useRecoveryCode(a, code)) {
        await this.succeeded(ip, a);
        return { ok: true, via: 'recovery-code' };
      }
    }
    await this.guard.recordFailure(ip, a);
    // only six digits count: a recovery code cannot be guessed, and anything else typed
    // must not hold the owner's codes back longer
    if (!totp) return { ok: false, reason: 'invalid' };
    const [[, inRow]] = (await this.redis
      .multi()
      .incr(failKey)
      .expire(failKey, CODE_FAILURE_SECONDS)
      .exec()) as [[null, number], unknown];
    if (inRow < MAX_CODE_FAILURES) return { ok: false, reason: 'invalid' };
    // codes are refused unchecked from here on, so nothing renews the refusal: it ends
    // CODE_FAILURE_SECONDS after the cap was reached
    await this.redis.set(capKey, String(this.now()), 'EX', CODE_FAILURE_SECONDS, 'NX');
    return { ok: false, reason: 'too-many-codes' };
  }

  private async succeeded(ip: string, account: string): Promise<void> {
    await this.redis.del(`totp:fail:${account}`, `totp:fail-cap:${account}`);
    await this.guard.recordSuccess(ip, account);
  }

  /** A right code of a time step not used before; the step is then marked used (RFC 6238 §5.2). */
  private async checkCode(account: string, secret: string, code: string): Promise<boolean> {
    const token = code.trim();
    if (!/^\d{6}$/.test(token)) return false;
    const epoch = Math.floor(this.now() / 1000);
    const { verify: verifyTotp } = await otplib();
    let res;
    try {
      res = await verifyTotp({ secret, token, epoch, epochTolerance: TOLERANCE_SECONDS });
    } catch {
      return false;
    }
    if (!res.valid) return false;
    // SET NX: of two logins with the same code, only the first gets it
    const step = Math.floor(epoch / 30) + res.delta;
    const fresh = await this.redis.set(`totp:used:${account}:${step}`, '1', 'EX', 180, 'NX');
    return fresh === 'OK';
  }

  private async useRecoveryCode(account: string, code: string): Promise<boolean> {
    const c = normalizeRecovery(code);
    if (!/^[a-z2-9]{10}$/.test(c)) return false;
    const digest = sha256(c);
    // compare every stored hash in constant time, then remove the one that matched (SREM: once)
    const stored = await this.redis.smembers(`totp:recovery:${account}`);
    const want = Buffer.from(digest, 'hex');
    const hit = stored.find((h) => {
      const have = Buffer.from(h, 'hex');
      return have.length === want.length && timingSafeEqual(have, want);
    });
    return !!hit && (await this.redis.srem(`totp:recovery:${account}`, hit)) === 1;
  }
}
