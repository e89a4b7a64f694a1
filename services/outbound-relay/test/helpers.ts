import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { Redis } from 'ioredis';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { loadConfig, selfSignedCertificate } from '@mailyard/config';
import { ENVELOPE_VERSION, RoutingKeys, type Envelope } from '@mailyard/contracts';
import type { DeferredEntry, DeferredIndex } from '@mailyard/queue-admin';
import { createRuntime, type Runtime } from '@mailyard/runtime';
import { newQueueId } from '@mailyard/smtp-core';
import { entryArgs, freePort } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform, type PlatformOptions } from '../../../test/harness.js';
import {
  buildOutboundRelay,
  defaultDeps,
  outboundRelaySchema,
  type OutboundRelay,
  type PolicyFetcher,
} from '../src/index.js';

/** A free TCP port on loopback, used by every remote MTA of a test file (each on its own 127.0.0.x). */
export { freePort };

export interface Received {
  from: string;
  to: string[];
  data: Buffer;
  secure: boolean;
  user: string | null;
  params: Record<string, unknown>;
}

type Verdict = { code: number; message: string } | undefined;

export interface RemoteBehaviour {
  /** Called for each MAIL FROM; a verdict refuses the sender (421 also ends the session). */
  mail?: (address: string) => Verdict;
  /** Called for each RCPT TO; a verdict refuses the recipient. */
  rcpt?: (address: string, attempt: number) => Verdict;
  /** Refuse the connection at the greeting with this reply. */
  greeting?: Verdict;
  /** Called after the data arrived; a verdict refuses the message. */
  data?: (msg: Received) => Verdict | Promise<Verdict>;
  noStartTls?: boolean;
  hide8BitMime?: boolean;
  hideSmtpUtf8?: boolean;
  size?: number;
  /** Certificate for STARTTLS; smtp-server's built-in self-signed one otherwise. */
  tls?: { key: string; cert: string };
  /** Require AUTH with these credentials. */
  auth?: { user: string; pass: string };
  /** Close a session idle this long (smtp-server's socketTimeout: 421, then close). */
  idleTimeoutMs?: number;
  /** The name it greets and answers EHLO with (`mx-<ip>` otherwise). */
  name?: string;
}

export interface RemoteMta {
  ip: string;
  port: number;
  received: Received[];
  /** RCPT TO commands seen, per address (to count retries). */
  rcptAttempts: Map<string, number>;
  sessions: number;
  /** Sessions open now, and the most open at the same time. */
  open: number;
  maxConcurrent: number;
  /** Mail transactions per session, in the order the sessions ended. */
  transactionsPerSession: number[];
  behaviour: RemoteBehaviour;
  close(): Promise<void>;
}

/** A real SMTP server (smtp-server) on `ip:port` that records what it was sent. */
export async function startRemoteMta(
  ip: string,
  port: number,
  behaviour: RemoteBehaviour = {},
): Promise<RemoteMta> {
  const mta: RemoteMta = {
    ip,
    port,
    received: [],
    rcptAttempts: new Map(),
    sessions: 0,
    open: 0,
    maxConcurrent: 0,
    transactionsPerSession: [],
    behaviour,
    close: async () => undefined,
  };
  const err = (v: NonNullable<Verdict>) => Object.assign(new Error(v.message), { responseCode: v.code });
  // sessions that reached onConnect: one closed before (its idle time out while the
  // greeting was delayed) was never counted open
  const connected = new Set<string>();
  const opts: SMTPServerOptions = {
    name: behaviour.name ?? `mx-${ip}`,
    banner: 'test MTA',
    logger: false,
    // the machine's resolver is not ours to ask (and may be unreachable): the greeting
    // would wait for it, past a short idle limit
    disableReverseLookup: true,
    disabledCommands: behaviour.auth ? [] : ['AUTH'],
    authOptional: !behaviour.auth,
    hideSTARTTLS: !!behaviour.noStartTls,
    hide8BITMIME: !!behaviour.hide8BitMime,
    hideSMTPUTF8: !!behaviour.hideSmtpUtf8,
    ...(behaviour.size ? { size: behaviour.size } : {}),
    ...(behaviour.idleTimeoutMs ? { socketTimeout: behaviour.idleTimeoutMs } : {}),
    ...(behaviour.tls ? { key: behaviour.tls.key, cert: behaviour.tls.cert } : {}),
    onConnect(session, cb) {
      connected.add(session.id);
      mta.sessions++;
      mta.open++;
      mta.maxConcurrent = Math.max(mta.maxConcurrent, mta.open);
      if (mta.behaviour.greeting) return cb(err(mta.behaviour.greeting));
      cb();
    },
    onClose(session) {
      if (!connected.delete(session.id)) return;
      mta.open--;
      mta.transactionsPerSession.push(session.transaction - 1);
    },
    onAuth(auth, _session, cb) {
      const want = mta.behaviour.auth;
      if (want && auth.username === want.user && auth.password === want.pass)
        return cb(null, { user: auth.username });
      cb(err({ code: 535, message: '5.7.8 Authentication credentials invalid' }));
    },
    onMailFrom(address, _session, cb) {
      const v = mta.behaviour.mail?.(address.address);
      if (v) return cb(err(v));
      cb();
    },
    onRcptTo(address, _session, cb) {
      const n = (mta.rcptAttempts.get(address.address) ?? 0) + 1;
      mta.rcptAttempts.set(address.address, n);
      const v = mta.behaviour.rcpt?.(address.address, n);
      if (v) return cb(err(v));
      cb();
    },
    onData(stream: Readable, session: SMTPServerSession, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const msg: Received = {
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((r) => r.address),
          data: Buffer.concat(chunks),
          secure: session.secure,
          user: (session.user as string | undefined) ?? null,
          params: (session.envelope.mailFrom && session.envelope.mailFrom.args) || {},
        };
        void Promise.resolve(mta.behaviour.data?.(msg)).then((v) => {
          if (v) return cb(err(v));
          mta.received.push(msg);
          cb(null, 'Ok: queued');
        });
      });
    },
  };
  const server = new SMTPServer(opts);
  server.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, ip, () => resolve());
  });
  mta.close = () => new Promise<void>((r) => server.close(() => r()));
  return mta;
}

export function tlsPair(hostname: string): { key: string; cert: string } {
  return selfSignedCertificate(hostname);
}

export interface RelayHandle {
  relay: OutboundRelay;
  rt: Runtime;
  stop(): Promise<void>;
}

/** Builds an outbound-relay in this process on the platform's vhost, Redis prefix and DNS. */
export async function startRelay(
  p: Platform,
  overrides: Record<string, unknown> = {},
  extra: { mtaStsFetcher?: PolicyFetcher; redis?: (own: Redis) => Redis } = {},
): Promise<RelayHandle> {
  const cfg = loadConfig(outboundRelaySchema, {
    env: {},
    overrides: {
      amqp_url: p.env.AMQP_URL,
      redis_url: p.env.REDIS_URL,
      redis_prefix: p.env.REDIS_PREFIX,
      http_port: 0,
      listen_address: '127.0.0.1',
      log_level: process.env.TEST_LOG_LEVEL ?? 'silent',
      myhostname: 'mx.mailyard.test',
      dns_servers: p.env.DNS_SERVERS,
      smtp_connect_timeout: '3s',
      smtp_reply_timeout: '10s',
      // the platform receives mail on 127.0.0.1; the other loopback addresses (127.0.0.x,
      // ::1) play the remote MTAs, which loop detection would otherwise take for us
      inet_interfaces: '127.0.0.1',
      ...overrides,
    },
  });
  const rt = await createRuntime('outbound-relay', cfg);
  const deps = defaultDeps(cfg, rt);
  const relay = buildOutboundRelay(cfg, {
    ...deps,
    ...(extra.mtaStsFetcher ? { mtaStsFetcher: extra.mtaStsFetcher } : {}),
    ...(extra.redis ? { redis: extra.redis(deps.redis) } : {}),
  });
  await relay.start();
  return {
    relay,
    rt,
    async stop() {
      await relay.stop();
      await rt.close();
    },
  };
}

/**
 * What a relay test file runs on: a platform (`platform`: its zone, with or without
 * delivery), its local `accounts`, and one port every remote MTA of the file listens on
 * (each on its own 127.0.0.x) and every relay sends to. What a test starts through it is
 * closed with it, those stopped before then excepted: relays first, then the remote
 * MTAs, then the platform.
 */
export interface RelayTestbed {
  p: Platform;
  port: number;
  /** A remote MTA on `ip` at the testbed's port. */
  remote(ip: string, behaviour?: RemoteBehaviour): Promise<RemoteMta>;
  /** An in-process relay sending to the testbed's port (startRelay), `overrides` over that. */
  relay(overrides?: Record<string, unknown>, extra?: Parameters<typeof startRelay>[2]): Promise<RelayHandle>;
  /** A relay process sending to the testbed's port (spawnRelay), killed with SIGKILL at the close. */
  spawn(env?: Record<string, string>): Promise<ChildProcess>;
  close(): Promise<void>;
}

export async function relayTestbed(
  platform: PlatformOptions,
  accounts: string[] = [],
): Promise<RelayTestbed> {
  const port = await freePort();
  const p = await startPlatform(platform);
  const relays = new Set<RelayHandle>();
  const remotes = new Set<RemoteMta>();
  const children = new Set<ChildProcess>();
  const close = async () => {
    for (const c of children) c.kill('SIGKILL');
    for (const r of relays) await r.stop();
    for (const m of remotes) await m.close();
    await p.close();
  };
  try {
    for (const a of accounts) await addAccount(p.directory, a);
  } catch (err) {
    await close();
    throw err;
  }
  return {
    p,
    port,
    async remote(ip, behaviour) {
      const mta = await startRemoteMta(ip, port, behaviour);
      const closeMta = mta.close.bind(mta);
      mta.close = () => {
        remotes.delete(mta);
        return closeMta();
      };
      remotes.add(mta);
      return mta;
    },
    async relay(overrides = {}, extra) {
      const r = await startRelay(p, { outbound_port: port, ...overrides }, extra);
      const handle: RelayHandle = {
        ...r,
        stop: () => {
          relays.delete(handle);
          return r.stop();
        },
      };
      relays.add(handle);
      return handle;
    },
    async spawn(env) {
      const child = await spawnRelay(p, port, env);
      children.add(child);
      return child;
    },
    close,
  };
}

/** How long a spawned relay may take to say it is ready (a busy machine: tsx compiles). */
const READY_MS = 60_000;

/**
 * outbound-relay as its own process, the way it runs in production, on the platform's
 * vhost, Redis prefix and DNS, sending to remote MTAs on `port`; `env` over those.
 */
export function spawnRelay(
  p: Platform,
  port: number,
  env: Record<string, string> = {},
): Promise<ChildProcess> {
  const proc = spawn(process.execPath, entryArgs('services/outbound-relay'), {
    cwd: new URL('../../../', import.meta.url).pathname,
    env: {
      ...process.env,
      ...p.env,
      OUTBOUND_PORT: String(port),
      OUTBOUND_RETRY_SCHEDULE: '200ms',
      HTTP_PORT: '0',
      LISTEN_ADDRESS: '127.0.0.1',
      LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const slow = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`outbound-relay not ready within ${READY_MS} ms: ${out}`));
    }, READY_MS);
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!out.includes('outbound-relay ready')) return;
      clearTimeout(slow);
      resolve(proc);
    });
    proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
    proc.once('exit', (code) => {
      clearTimeout(slow);
      reject(new Error(`outbound-relay exited with ${code}: ${out}`));
    });
  });
}

export function envelope(from: string, to: string[], extra: Partial<Envelope> = {}): Envelope {
  return {
    v: ENVELOPE_VERSION,
    queueId: newQueueId(),
    mailFrom: from,
    recipients: to,
    client: { ip: '127.0.0.1', hostname: 'localhost', helo: 'localhost', tls: null, user: null },
    receivedAt: new Date().toISOString(),
    attempts: 0,
    body: '7BIT',
    smtputf8: false,
    lastError: null,
    ...extra,
  };
}

/** The deferred-index entry of a test's message (one outbound message for its queue id), or null. */
export async function entryOf(index: DeferredIndex, queueId: string): Promise<DeferredEntry | null> {
  const [entry, ...more] = await index.ofQueueId(queueId);
  if (more.length) throw new Error(`${queueId} has ${more.length + 1} index entries`);
  return entry ?? null;
}

/** Queues a message for outbound the way mta-inbound and msa do (confirmed publish). */
export async function queueOutbound(p: Platform, env: Envelope, message: string | Buffer): Promise<Envelope> {
  await p.inboundRt.bus.publishMail(RoutingKeys.outbound, Buffer.from(message), env);
  return env;
}

export function simpleMessage(from: string, to: string, subject: string, body = 'Hello.\r\n'): string {
  return `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@test>\r\n\r\n${body}`;
}

/** Sum of a counter's values whose labels include `labels`. */
export async function counterValue(
  rt: Runtime,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const m = rt.registry.getSingleMetric(name);
  if (!m) return 0;
  const data = await m.get();
  return data.values
    .filter((v) =>
      Object.entries(labels).every(([k, val]) => String((v.labels as Record<string, unknown>)[k]) === val),
    )
    .reduce((a, v) => a + v.value, 0);
}

export interface ScriptedMta {
  /** Every command line received, in order, across sessions. */
  commands: string[];
  /** Messages taken (the data, dot-unstuffed). */
  received: Buffer[];
  sessions: number;
  close(): Promise<void>;
}

/**
 * A plain SMTP server on `ip:port` that answers the greeting, EHLO, HELO, MAIL and each
 * RCPT with the given replies (smtp-server can refuse neither EHLO nor HELO, nor close
 * the session with a 421 in the middle of a pipelined group); otherwise it takes mail
 * like any server, with the extensions its EHLO reply names. After a 421 it closes the
 * connection, as a server does (RFC 5321 §3.8), answering nothing more.
 */
export async function startScriptedMta(
  ip: string,
  port: number,
  replies: {
    greeting?: string;
    ehlo?: string;
    helo?: string;
    mail?: string;
    rcpt?: (address: string) => string | undefined;
  },
): Promise<ScriptedMta> {
  const mta: ScriptedMta = { commands: [], received: [], sessions: 0, close: async () => undefined };
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    mta.sessions++;
    let closed = false;
    const say = (line: string) => {
      socket.write(line + '\r\n');
      if (line.startsWith('421')) {
        closed = true;
        socket.end();
      }
    };
    say(replies.greeting ?? `220 mx-${ip} ESMTP scripted`);
    let buf = '';
    let data: string | null = null;
    socket.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (;;) {
        if (closed) return;
        if (data !== null) {
          const end = buf.indexOf('\r\n.\r\n');
          if (end === -1) return;
          data += buf.slice(0, end + 2);
          buf = buf.slice(end + 5);
          mta.received.push(Buffer.from(data.replace(/^\.\./gm, '.'), 'latin1'));
          data = null;
          say('250 2.0.0 Ok: queued');
          continue;
        }
        const i = buf.indexOf('\r\n');
        if (i === -1) return;
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        mta.commands.push(line);
        const verb = line.split(' ')[0]!.toUpperCase();
        if (verb === 'EHLO') say(replies.ehlo ?? `250 mx-${ip}`);
        else if (verb === 'HELO') say(replies.helo ?? `250 mx-${ip}`);
        else if (verb === 'MAIL') say(replies.mail ?? '250 2.0.0 Ok');
        else if (verb === 'RCPT') say(replies.rcpt?.(/<([^>]*)>/.exec(line)?.[1] ?? '') ?? '250 2.0.0 Ok');
        else if (verb === 'RSET' || verb === 'NOOP') say('250 2.0.0 Ok');
        else if (verb === 'DATA') {
          say('354 End data with <CR><LF>.<CR><LF>');
          data = '';
        } else if (verb === 'QUIT') {
          say('221 2.0.0 Bye');
          socket.end();
        } else say('502 5.5.2 Error: command not recognized');
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, ip, () => resolve());
  });
  mta.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return mta;
}

/** Queues a simple message from alice@example.test to `to`; its envelope. */
export const sendFromAlice = (p: Platform, to: string, subject: string): Promise<Envelope> =>
  queueOutbound(p, envelope('alice@example.test', [to]), simpleMessage('alice@example.test', to, subject));

/** The DSN (or delay warning) about `queueId` in alice@example.test's inbox, if it came. */
export const dsnIn = (p: Platform, queueId: string): string | undefined =>
  p
    .inbox('alice@example.test')
    .map((f) => readFileSync(f, 'utf8'))
    .find((m) => m.includes(`X-Mailyard-Queue-ID: ${queueId}`));
