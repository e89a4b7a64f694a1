import type { Redis } from 'ioredis';

export type LoginProtocol = 'imap' | 'pop3' | 'submission' | 'webmail';

/** One successful login, as the account page lists it. */
export interface LoginRecord {
  /** ISO 8601. */
  at: string;
  protocol: LoginProtocol;
  ip: string;
  /** What the client said it is (the webmail: the browser's User-Agent), when known. */
  client?: string;
  via: 'password' | 'app-password';
  /** With an app password: its name. */
  appPassword?: string;
}

/** The key of an account's login history, which goes with the account. */
export const loginHistoryKey = (account: string) => `auth:logins:${account.toLowerCase()}`;

/** How many logins an account keeps. */
export const LOGIN_HISTORY = 50;

/**
 * Recent successful logins per account, and the last use of each app password, for the
 * account page. Written by the authenticator, best effort (a login is not refused because
 * its record could not be written).
 *   auth:logins:<account>   LIST  JSON LoginRecord, newest first
 *   apppw:used:<account>    HASH  <app password name> -> JSON {at, ip}
 */
export class LoginHistory {
  constructor(private readonly redis: Redis) {}

  async record(account: string, rec: Omit<LoginRecord, 'at'>, now = new Date()): Promise<void> {
    const a = account.toLowerCase();
    const full: LoginRecord = { at: now.toISOString(), ...rec };
    const m = this.redis
      .multi()
      .lpush(loginHistoryKey(a), JSON.stringify(full))
      .ltrim(loginHistoryKey(a), 0, LOGIN_HISTORY - 1);
    if (rec.appPassword)
      m.hset(`apppw:used:${a}`, rec.appPassword, JSON.stringify({ at: full.at, ip: rec.ip }));
    await m.exec();
  }

  async list(account: string, limit = 20): Promise<LoginRecord[]> {
    const raw = await this.redis.lrange(loginHistoryKey(account), 0, limit - 1);
    return raw.flatMap((r) => {
      try {
        return [JSON.parse(r) as LoginRecord];
      } catch {
        return [];
      }
    });
  }
}
