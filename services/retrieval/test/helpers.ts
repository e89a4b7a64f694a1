import { loadConfig } from '@mailyard/config';
import { LoginGuard } from '@mailyard/auth';
import type { Logger } from '@mailyard/observability';
import { createRuntime, type Runtime } from '@mailyard/runtime';
import type { Redis } from 'ioredis';
import nodemailer from 'nodemailer';
import { waitFor } from '@mailyard/testkit';
import type { Platform } from '../../../test/harness.js';
import {
  buildRetrieval,
  defaultDeps,
  retrievalSchema,
  type NotifyRetry,
  type RetrievalService,
} from '../src/index.js';

export const PASSWORD = 'correct horse battery staple';

export interface Retrieval {
  svc: RetrievalService;
  rt: Runtime;
  ports: ReturnType<RetrievalService['ports']>;
  stop(): Promise<void>;
}

/**
 * Builds a retrieval instance on port 0 over the platform's store, broker and Redis;
 * `guardRedis` keeps the login lockout on another Redis (one a test can make fail);
 * `notifyRetry` replaces NOTIFY's schedule of minutes.
 */
export async function startRetrieval(
  p: Platform,
  overrides: Record<string, unknown> = {},
  opts: { guardRedis?: Redis; logger?: Logger; notifyRetry?: NotifyRetry } = {},
): Promise<Retrieval> {
  const config = loadConfig(retrievalSchema, {
    env: {},
    overrides: {
      amqp_url: p.vhost.url,
      redis_url: p.env.REDIS_URL,
      redis_prefix: p.redis.prefix,
      http_port: 0,
      listen_address: '127.0.0.1',
      log_level: process.env.TEST_LOG_LEVEL ?? 'silent',
      myhostname: 'imap.mailyard.test',
      maildir_root: p.maildir,
      imap_port: 0,
      imaps_port: 0,
      pop3_port: 0,
      pop3s_port: 0,
      plaintext_auth_networks: '127.0.0.1/32',
      ...overrides,
    },
  });
  const rt = await createRuntime('retrieval', config, opts.logger);
  await rt.bus.waitConnected();
  const svc = buildRetrieval(config, {
    ...defaultDeps(config, rt, opts.guardRedis ? { guard: new LoginGuard(opts.guardRedis) } : {}),
    ...(opts.notifyRetry ? { notifyRetry: opts.notifyRetry } : {}),
  });
  await svc.start();
  return {
    svc,
    rt,
    ports: svc.ports(),
    async stop() {
      await svc.stop();
      await rt.close();
    },
  };
}

/** Sends a raw message through mta-inbound; the real delivery service files it. */
export async function sendRaw(p: Platform, to: string, raw: string | Buffer): Promise<void> {
  const before = p.inbox(to).length;
  const t = nodemailer.createTransport({
    host: '127.0.0.1',
    port: p.inbound.port,
    secure: false,
    ignoreTLS: true,
  });
  await t.sendMail({ envelope: { from: 'sender@remote.example', to: [to] }, raw });
  t.close();
  await waitFor(() => p.inbox(to).length > before, { what: `delivery to ${to}` });
}

export function sampleMessage(i: number, extra = ''): string {
  return [
    'From: "Sender Name" <sender@remote.example>',
    `To: user@example.test`,
    `Subject: Test message ${i}`,
    'Date: Mon, 6 Jan 2025 10:00:00 +0000',
    `Message-ID: <m${i}@remote.example>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    '',
    `Body of message ${i}.${extra}`,
    '',
  ].join('\r\n');
}

export interface LogLine {
  level: 'info' | 'warn' | 'error';
  msg: string;
  fields: Record<string, unknown>;
}

/** A logger that keeps what the service logs (the level, message and fields of each line). */
export function capturingLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const make = (bound: Record<string, unknown>): Logger => {
    const at =
      (level: LogLine['level']) =>
      (a: unknown, b?: string): void => {
        const [fields, msg] = typeof a === 'string' ? [{}, a] : [a as Record<string, unknown>, b ?? ''];
        lines.push({ level, msg, fields: { ...bound, ...fields } });
      };
    const log = {
      child: (more: Record<string, unknown>) => make({ ...bound, ...more }),
      debug: () => undefined,
      trace: () => undefined,
      info: at('info'),
      warn: at('warn'),
      error: at('error'),
      fatal: at('error'),
    };
    return log as unknown as Logger;
  };
  return { logger: make({}), lines };
}
