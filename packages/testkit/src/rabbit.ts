import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { waitFor } from './wait.js';

const run = promisify(execFile);

export interface TestVhost {
  name: string;
  url: string;
  delete(): Promise<void>;
}

/** A fresh RabbitMQ vhost for one test file: the topology and messages of other tests stay invisible. */
export async function createVhost(prefix = 'test'): Promise<TestVhost> {
  const name = `${prefix}-${randomBytes(4).toString('hex')}`;
  await run('rabbitmqctl', ['-q', 'add_vhost', name]);
  await run('rabbitmqctl', ['-q', 'set_permissions', '-p', name, 'guest', '.*', '.*', '.*']);
  return {
    name,
    url: `amqp://guest:guest@127.0.0.1:5672/${encodeURIComponent(name)}`,
    async delete() {
      await run('rabbitmqctl', ['-q', 'delete_vhost', name]).catch(() => undefined);
    },
  };
}

/** Counts the messages of a queue of a vhost, ready and unacknowledged (queueDepths). */
export async function queueDepth(vhost: string, queue: string): Promise<number> {
  return (await queueDepths(vhost)).get(queue) ?? 0;
}

/**
 * The messages of every queue of a vhost, ready and being processed (unacknowledged), in
 * one listing: a message moving from one queue to another is seen in one of them (or
 * both), where two listings one after the other may both miss it.
 */
export async function queueDepths(vhost: string): Promise<Map<string, number>> {
  const { stdout } = await run('rabbitmqctl', [
    '-q',
    'list_queues',
    '-p',
    vhost,
    'name',
    'messages',
    '--no-table-headers',
  ]);
  const depths = new Map<string, number>();
  for (const line of stdout.split('\n')) {
    const [n, count] = line.trim().split(/\s+/);
    if (n) depths.set(n, Number(count));
  }
  return depths;
}

/**
 * Lets `queue` of the vhost take one message and refuse (nack) the next while that one
 * is there (a quorum queue checks its length before it takes a message, so a limit of 0
 * lets one in): a publisher's second message fails. Resolves once the broker applies
 * it; the function returned lifts it.
 */
export async function refuseAfterOne(vhost: string, queue: string): Promise<() => Promise<void>> {
  const policy = `${queue}-full`;
  const escaped = queue.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  await run('rabbitmqctl', [
    '-q',
    'set_policy',
    '-p',
    vhost,
    '--apply-to',
    'queues',
    policy,
    `^${escaped}$`,
    '{"max-length":0,"overflow":"reject-publish"}',
  ]);
  await waitFor(
    async () => {
      const { stdout } = await run('rabbitmqctl', ['-q', 'list_queues', '-p', vhost, 'name', 'policy']);
      return stdout.split('\n').some((line) => line.trim().split(/\s+/).join(' ') === `${queue} ${policy}`);
    },
    { what: `the policy on ${queue}` },
  );
  return async () => {
    await run('rabbitmqctl', ['-q', 'clear_policy', '-p', vhost, policy]);
  };
}
