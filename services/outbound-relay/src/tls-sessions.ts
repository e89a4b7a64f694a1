/**
 * TLS sessions of the servers we deliver to, so that a new connection resumes (one round
 * trip, no certificate exchange or key agreement from scratch) instead of a full
 * handshake: Postfix's smtp_tls_session_cache_database, in memory. Only for opportunistic
 * TLS: a session is only as good as the checks made when it was set up, and a connection
 * that must verify the certificate (MTA-STS, relayhost) always does so in full.
 */
export class TlsSessionCache {
  private readonly sessions = new Map<string, { session: Buffer; at: number }>();

  constructor(
    private readonly maxEntries = 1000,
    private readonly ttlMs = 60 * 60_000,
  ) {}

  get(key: string): Buffer | undefined {
    const e = this.sessions.get(key);
    if (!e) return undefined;
    if (Date.now() - e.at > this.ttlMs) {
      this.sessions.delete(key);
      return undefined;
    }
    return e.session;
  }

  set(key: string, session: Buffer): void {
    this.sessions.delete(key);
    this.sessions.set(key, { session, at: Date.now() });
    // the oldest goes first (a Map keeps insertion order)
    if (this.sessions.size > this.maxEntries) this.sessions.delete(this.sessions.keys().next().value!);
  }
}
