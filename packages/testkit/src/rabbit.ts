import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

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

/** Counts messages ready in a queue of a vhost. */
export async function queueDepth(vhost: string, queue: string): Promise<number> {
  const { stdout } = await run('rabbitmqctl', [
    '-q',
    'list_queues',
    '-p',
    vhost,
    'name',
    'messages',
    '--no-table-headers',
  ]);
  for (const line of stdout.split('\n')) {
    const [n, count] = line.trim().split(/\s+/);
    if (n === queue) return Number(count);
  }
  return 0;
}
