#!/usr/bin/env node
// `pnpm start`: every service built so far, one process each (as in production), in the
// foreground, with readable logs. Ctrl-C stops them all (SIGTERM: goodbye to the
// clients, drain, exit, within SHUTDOWN_GRACE). A service runs from its bundle while that
// is current (`pnpm build`: it starts in a third of the time), else from its source.
// Settings come from the environment (README.md, "Configuration"; every key with its
// comment in services/<name>/src/config.ts); e.g.
//   SMTP_PORT=2525 MAILDIR_ROOT=./data/mail pnpm start
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { entryArgs } from './bundle-current.mjs';

const root = new URL('..', import.meta.url).pathname;
// service -> its /metrics port (the same map as docker-compose.yml)
const SERVICES = {
  'mta-inbound': 9101,
  delivery: 9102,
  msa: 9103,
  'outbound-relay': 9104,
  policy: 9105,
  retrieval: 9106,
  webmail: 9107,
};
const wanted = (process.env.SERVICES ?? Object.keys(SERVICES).join(','))
  .split(',')
  .map((s) => s.trim())
  .filter((s) => s && existsSync(`${root}services/${s}/src/main.ts`));

const redact = (u) => u.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
function reachable(url, defPort) {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = connect({ host: u.hostname, port: Number(u.port || defPort) });
    s.setTimeout(2000);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
    s.once('timeout', () => (s.destroy(), resolve(false)));
  });
}
const amqp = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const redis = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
let ok = true;
if (!(await reachable(amqp, 5672))) {
  console.error(
    `mailyard: RabbitMQ is unreachable at ${redact(amqp)} (install and start rabbitmq-server, or set AMQP_URL)`,
  );
  ok = false;
}
if (!(await reachable(redis, 6379))) {
  console.error(
    `mailyard: Redis is unreachable at ${redact(redis)} (install and start redis-server, or set REDIS_URL)`,
  );
  ok = false;
}
if (!ok) process.exit(1);

// The webmail's service login to retrieval and msa: a fresh secret for this run, unless set.
const serviceLogin =
  process.env.SERVICE_LOGIN_PASSWORD || process.env.SERVICE_LOGIN_PASSWORD_FILE
    ? {}
    : { SERVICE_LOGIN_PASSWORD: randomBytes(24).toString('base64url') };
/** The webmail reaches retrieval and msa on their implicit-TLS ports, wherever they are. */
const webmailEnv = {
  IMAP_SERVER: `127.0.0.1:${process.env.IMAPS_PORT || 993}`,
  SUBMISSION_SERVER: `127.0.0.1:${process.env.SUBMISSIONS_PORT || 465}`,
  // without certificate files every service makes its own self-signed one
  ...(process.env.TLS_CERT_FILE ? {} : { UPSTREAM_TLS_VERIFY: 'no' }),
};
if (wanted.includes('webmail') && !existsSync(`${root}services/webmail/dist/public/index.html`)) {
  console.error('mailyard: building the webmail front end (once)');
  const built = spawnSync('pnpm', ['--filter', '@mailyard/service-webmail', 'run', 'build:web'], {
    cwd: root,
    stdio: 'inherit',
  });
  if (built.status !== 0) process.exit(1);
}

const pretty = `${root}node_modules/.bin/pino-pretty`;
const children = [];
for (const name of wanted) {
  // its bundle while it is current (`pnpm build`), as the images run it; else its source
  const child = spawn(process.execPath, entryArgs(`services/${name}`), {
    cwd: root,
    // mta-inbound (and msa) ask the policy service only when it runs too
    env: {
      HTTP_PORT: String(SERVICES[name]),
      ...(wanted.includes('policy') ? { POLICY_ENABLED: 'yes' } : {}),
      ...(name === 'webmail' ? webmailEnv : {}),
      ...serviceLogin,
      ...process.env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  // one terminal line per log line: the fields follow the message on the same line
  // (test/log-lines.test.ts counts them); the service's name is in parentheses already
  const fmt = spawn(
    pretty,
    ['--colorize', '--singleLine', '--translateTime', 'SYS:HH:MM:ss.l', '--ignore', 'pid,hostname,service'],
    { stdio: ['pipe', 'inherit', 'inherit'] },
  );
  child.stdout.pipe(fmt.stdin);
  child.on('exit', (code, signal) => {
    console.error(`mailyard: ${name} exited (${signal ?? code})`);
    if (!stopping) stop(1);
  });
  children.push(child);
}
console.error(`mailyard: started ${wanted.join(', ')}`);

// One line once every service answers /readyz, naming where to connect (the ports the
// services were given, from the environment or their defaults).
const LISTENS = {
  'mta-inbound': () => `SMTP ${process.env.SMTP_PORT || 25}`,
  msa: () => `submission ${process.env.SUBMISSION_PORT || 587}/${process.env.SUBMISSIONS_PORT || 465}`,
  retrieval: () =>
    `IMAP ${process.env.IMAP_PORT || 143}/${process.env.IMAPS_PORT || 993}, POP3 ${process.env.POP3_PORT || 110}/${process.env.POP3S_PORT || 995}`,
  webmail: () => `webmail https ${process.env.WEBMAIL_PORT || 443}`,
};
const readyz = async (name) => {
  try {
    return (await fetch(`http://127.0.0.1:${SERVICES[name]}/readyz`)).ok;
  } catch {
    return false;
  }
};
// (with HTTP_PORT set for all, the services' ops ports are not known here: no such line)
const pending = new Set(wanted);
const startedAt = Date.now();
let polling = false;
let toldSlow = false;
const readiness = setInterval(async () => {
  if (process.env.HTTP_PORT) return clearInterval(readiness);
  // one round at a time: on a busy machine a round can outlast the interval
  if (polling) return;
  polling = true;
  for (const name of [...pending]) if (await readyz(name)) pending.delete(name);
  polling = false;
  if (stopping) return clearInterval(readiness);
  if (!pending.size) {
    clearInterval(readiness);
    const ports = wanted.filter((n) => LISTENS[n]).map((n) => LISTENS[n]());
    console.error(
      `mailyard: all services ready: ${ports.join(', ')}; metrics ${wanted.map((n) => SERVICES[n]).join(', ')}`,
    );
  } else if (!toldSlow && Date.now() - startedAt > 120_000) {
    // said once; the ready line still follows if they get there
    toldSlow = true;
    console.error(`mailyard: not ready after 2 min: ${[...pending].join(', ')} (see their /readyz)`);
  }
}, 500);
readiness.unref();

// Each service exits by itself within SHUTDOWN_GRACE; one that has not by a little after
// is killed, so that nothing outlives `pnpm start` holding its ports.
const grace = /^(\d+)(ms|s|m)?$/.exec(process.env.SHUTDOWN_GRACE ?? '');
const graceMs = grace ? Number(grace[1]) * { ms: 1, s: 1000, m: 60_000 }[grace[2] ?? 's'] : 5000;
const running = () => children.filter((c) => c.exitCode === null && c.signalCode === null);
let stopping = false;
function stop(code = 0) {
  // Ctrl-C may arrive twice (from the terminal and forwarded by pnpm): once is enough
  if (stopping) return;
  stopping = true;
  for (const c of running()) c.kill('SIGTERM');
  setTimeout(() => {
    for (const c of running()) {
      console.error(`mailyard: ${c.spawnargs.at(-1)} did not stop in time, killing it`);
      c.kill('SIGKILL');
    }
    process.exit(code || 1);
  }, graceMs + 2000).unref();
  Promise.all(running().map((c) => new Promise((r) => c.once('exit', r)))).then(() => process.exit(code));
}
process.on('SIGINT', () => stop(0));
process.on('SIGTERM', () => stop(0));
