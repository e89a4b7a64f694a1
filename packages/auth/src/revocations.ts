import type { Redis } from 'ioredis';
import type { AppPasswords } from './app-passwords.js';

/** The Redis pub/sub channel of revocations; channels are not prefixed by ioredis, so the key prefix is added here. */
export function revokedChannel(redis: Redis): string {
  return `${redis.options.keyPrefix ?? ''}auth:revoked`;
}

/** Tells every instance that an app password of `account` was revoked (message: JSON {account, name}). */
export async function announceRevocation(redis: Redis, account: string, name: string): Promise<void> {
  await redis.publish(revokedChannel(redis), JSON.stringify({ account: account.toLowerCase(), name }));
}

/** The app password a session logged in with: its name and stored record (as AppPasswords.records gives it). */
export interface AppPasswordCredential {
  name: string;
  record: string;
}

interface Watch {
  credential: AppPasswordCredential;
  onRevoked: () => void;
}

/**
 * Ends the sessions of a revoked app password within moments, on every instance: each
 * service subscribes to the revocation channel and calls back the sessions logged in
 * with that app password (IMAP, IDLE included, POP3, SMTP submission), which close.
 *
 * An announcement only says which name was revoked; the stored record is read again
 * before a session is ended, so a session that logged in with a new app password of
 * the same name is left alone. Announcements missed while the subscription was down
 * are made up for by checking every watched session again at each (re)subscription,
 * and a session is checked once as soon as it is watched, so a revocation between its
 * login and its watch is not missed either. When the check cannot be made (Redis
 * failing) the sessions stay: they logged in, and they are checked again when Redis
 * is back. A new login with a revoked app password is refused by the authenticator
 * itself, cache included (CredentialCache re-reads the stored record on every use).
 */
export class CredentialRevocations {
  private readonly watched = new Map<string, Set<Watch>>();
  private sub: Redis | null = null;

  constructor(
    private readonly redis: Redis,
    private readonly appPasswords: AppPasswords,
    private readonly onError: (err: unknown) => void = () => undefined,
  ) {}

  /** Subscribes (and subscribes again after every reconnection). */
  start(): void {
    if (this.sub) return;
    const sub = this.redis.duplicate({
      keyPrefix: '',
      lazyConnect: false,
      enableAutoPipelining: false,
      autoResubscribe: false,
    });
    this.sub = sub;
    sub.on('message', (_channel: string, message: string) => {
      let m: { account?: unknown; name?: unknown };
      try {
        m = JSON.parse(message) as typeof m;
      } catch {
        return;
      }
      if (typeof m.account === 'string') void this.verify(m.account, m.name);
    });
    sub.on('ready', () => {
      sub.subscribe(revokedChannel(this.redis)).then(
        () => {
          for (const account of this.watched.keys()) void this.verify(account);
        },
        (err: unknown) => this.onError(err),
      );
    });
    sub.on('error', () => undefined);
  }

  close(): void {
    this.sub?.disconnect();
    this.sub = null;
    this.watched.clear();
  }

  /** Calls `onRevoked` once the app password this session logged in with is revoked; returns the unwatch function. */
  watch(account: string, credential: AppPasswordCredential, onRevoked: () => void): () => void {
    const a = account.toLowerCase();
    let set = this.watched.get(a);
    if (!set) this.watched.set(a, (set = new Set()));
    const w: Watch = { credential, onRevoked };
    set.add(w);
    void this.verify(a, credential.name);
    return () => this.unwatch(a, w);
  }

  private unwatch(account: string, w: Watch): void {
    const set = this.watched.get(account);
    if (!set) return;
    set.delete(w);
    if (!set.size) this.watched.delete(account);
  }

  /** Ends the watched sessions of `account` (of one app password name, when given) whose record is gone or replaced. */
  private async verify(account: string, name?: unknown): Promise<void> {
    const set = this.watched.get(account);
    if (!set?.size) return;
    let records: Record<string, string>;
    try {
      records = await this.appPasswords.records(account);
    } catch (err) {
      this.onError(err);
      return;
    }
    for (const w of [...set]) {
      if (name !== undefined && w.credential.name !== name) continue;
      if (records[w.credential.name] === w.credential.record) continue;
      this.unwatch(account, w);
      w.onRevoked();
    }
  }
}
