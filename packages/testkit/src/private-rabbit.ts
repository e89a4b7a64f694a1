import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from './files.js';
import { startRestartable, type Restartable } from './restartable.js';
import { freePort } from './ports.js';
import { waitFor } from './wait.js';

const run = promisify(execFile);

/**
 * A RabbitMQ node of the test's own (its own name, ports, Mnesia and log directories,
 * no plugins), for fault tests that kill the broker; the shared node is never touched.
 * `start()` after `kill()` boots it on the same Mnesia directory: durable quorum queues
 * and their confirmed messages come back. RabbitMQ 3.10 writes its directory of Raft
 * servers to disk lazily (minutes), so a node killed soon after a quorum queue was
 * declared forgets the queue: `stop()` and `start()` once after declaring, as a
 * long-running broker would have.
 */
export interface PrivateRabbit extends Restartable {
  node: string;
  port: number;
  /** AMQP URL of the default vhost, guest/guest. */
  url: string;
  /** Runs `rabbitmqctl` against this node (e.g. to raise a memory alarm); resolves with its output. */
  ctl(...args: string[]): Promise<string>;
  /**
   * Raises (or clears) a memory alarm and resolves once the node has it: rabbitmqctl sets
   * the watermark at once, but the node checks its memory against it at its next tick
   * (every 2.5 s), and until then takes and confirms publishes as before.
   */
  memoryAlarm(on: boolean): Promise<void>;
}

// The Debian package's scripts run the node as the invoking user when called directly
// (the wrappers in /usr/sbin switch to the rabbitmq user and its Erlang cookie).
const scripts = existsSync('/usr/lib/rabbitmq/bin/rabbitmq-server') ? '/usr/lib/rabbitmq/bin/' : '';

let nodes = 0;

export async function startPrivateRabbit(): Promise<PrivateRabbit> {
  const [port, distPort] = [await freePort(), await freePort()];
  const node = `mailyard-fault-${process.pid}-${++nodes}@localhost`;
  const dir = tempDir('mailyard-rabbit-');
  const at = (name: string) => join(dir.path, name);
  for (const d of ['mnesia', 'log']) mkdirSync(at(d));
  // HOME holds the Erlang cookie that the node and rabbitmqctl share
  writeFileSync(at('.erlang.cookie'), randomBytes(16).toString('hex'));
  chmodSync(at('.erlang.cookie'), 0o400);
  writeFileSync(at('enabled_plugins'), '');
  writeFileSync(at('rabbitmq.conf'), `listeners.tcp.default = 127.0.0.1:${port}\n`);
  const env = {
    ...process.env,
    HOME: dir.path,
    RABBITMQ_NODENAME: node,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: at('mnesia'),
    RABBITMQ_LOG_BASE: at('log'),
    RABBITMQ_CONFIG_FILE: at('rabbitmq.conf'),
    RABBITMQ_ENABLED_PLUGINS_FILE: at('enabled_plugins'),
    // the start script then execs the Erlang VM: the child is the process a kill must take
    RUNNING_UNDER_SYSTEMD: '1',
  };
  const ctl = async (...args: string[]): Promise<string> =>
    (await run(`${scripts}rabbitmqctl`, ['-q', '-n', node, ...args], { env })).stdout;
  const server = await startRestartable({
    name: `RabbitMQ node ${node}`,
    command: `${scripts}rabbitmq-server`,
    args: [],
    env,
    readyTimeoutMs: 90_000,
    cleanup: () => dir.cleanup(),
    async ready() {
      // fails at once until the node has registered, then waits for its boot to end
      await ctl('await_startup', '--timeout', '60');
      return true;
    },
  });
  const memoryAlarm = async (on: boolean) => {
    await ctl('set_vm_memory_high_watermark', on ? '0.000001' : '0.4');
    await waitFor(async () => /memory/.test(await ctl('eval', 'rabbit_alarm:get_alarms().')) === on, {
      timeoutMs: 30_000,
      intervalMs: 200,
      what: `the memory alarm ${on ? 'raised' : 'cleared'}`,
    });
  };
  return { ...server, node, port, url: `amqp://guest:guest@127.0.0.1:${port}`, ctl, memoryAlarm };
}
