/**
 * `p`, or `fail()` once `ms` have passed without it settling, for a client that would
 * wait for an answer for ever: amqplib for the broker's (a channel opened while RabbitMQ
 * does not read the connection, blocked by an alarm or stuck), ioredis for Redis's (it
 * queues commands until it reconnects). What `p` does afterwards is left to run; its
 * rejection is ignored.
 */
export function within<T>(p: Promise<T>, ms: number, fail: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(fail()), Math.max(0, ms));
  });
  p.catch(() => undefined);
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
