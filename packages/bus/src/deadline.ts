/**
 * `p`, or `fail()` once `ms` have passed without it settling. amqplib waits for every
 * answer of the broker for ever: a channel opened or a queue checked while RabbitMQ does
 * not read the connection (blocked by an alarm, or stuck) would hold its caller as long.
 * What `p` does afterwards is left to run; its rejection is ignored.
 */
export function within<T>(p: Promise<T>, ms: number, fail: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(fail()), Math.max(0, ms));
  });
  p.catch(() => undefined);
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
