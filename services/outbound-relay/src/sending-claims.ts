import type { Redis } from 'ioredis';

/**
 * How long a run's claim on a recipient holds without being renewed. A run renews its
 * claims every third of it while it lives, so only a run that died (or lost Redis) lets
 * them lapse; its recipients then wait that long, and a retry delay, before another run
 * sends to them.
 */
export const SENDING_CLAIM_MS = 15_000;

/**
 * Per recipient: 0 settled before (KEYS[i], the done record, exists), 1 claimed now for
 * ARGV[1] (KEYS[i+1], for ARGV[2] ms), 2 claimed by another run.
 */
const TAKE = `local out = {}
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then out[#out + 1] = 0
  elseif redis.call('SET', KEYS[i + 1], ARGV[1], 'PX', ARGV[2], 'NX') then out[#out + 1] = 1
  else out[#out + 1] = 2 end
end
return out`;

/** Extends each claim (KEYS) still ARGV[1]'s by ARGV[2] ms. */
const RENEW = `for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2]) end
end
return 0`;

/** Deletes each claim (KEYS) still ARGV[1]'s. */
const RELEASE = `for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('DEL', k) end
end
return 0`;

/**
 * Which run sends to a recipient now. The broker gives a message whose consumer lost its
 * connection (a network blip, a missed heartbeat, a broker restart) to another instance
 * while the first may still be in the middle of its SMTP transaction, and a crash between
 * a retry's confirm and its message's ack leaves two retries that can run at once. The
 * records of settled recipients (`outbound:done:`) are written only once the remote
 * server answered, so both runs would send. A run claims each recipient it sends to,
 * in the round trip that reads those records; a run that finds a claim defers the
 * recipient to its next try instead.
 */
export class SendingClaims {
  constructor(
    private readonly redis: Redis,
    private readonly doneKey: (queueId: string, rcpt: string) => string,
    private readonly claimKey: (queueId: string, rcpt: string) => string,
  ) {}

  /** The recipients claimed for `token` (to send to) and those another run holds (busy). */
  async take(
    queueId: string,
    rcpts: string[],
    token: string,
  ): Promise<{ pending: string[]; busy: string[] }> {
    const keys = rcpts.flatMap((r) => [this.doneKey(queueId, r), this.claimKey(queueId, r)]);
    const found = (await this.redis.eval(TAKE, keys.length, ...keys, token, SENDING_CLAIM_MS)) as number[];
    return {
      pending: rcpts.filter((_, i) => found[i] === 1),
      busy: rcpts.filter((_, i) => found[i] === 2),
    };
  }

  async renew(queueId: string, rcpts: string[], token: string): Promise<void> {
    if (!rcpts.length) return;
    const keys = rcpts.map((r) => this.claimKey(queueId, r));
    await this.redis.eval(RENEW, keys.length, ...keys, token, SENDING_CLAIM_MS);
  }

  async release(queueId: string, rcpts: string[], token: string): Promise<void> {
    if (!rcpts.length) return;
    const keys = rcpts.map((r) => this.claimKey(queueId, r));
    await this.redis.eval(RELEASE, keys.length, ...keys, token);
  }
}
