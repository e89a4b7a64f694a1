// The platform of test/harness.ts (mta-inbound, delivery, RabbitMQ vhost, Redis prefix,
// temporary Maildir) with retrieval and msa accepting the webmail's service login, and
// the webmail on top: every service built with the composition function its main.ts uses.
// All three share one certificate for mail.mailyard.test, which the webmail verifies.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig, selfSignedCertificate } from '@mailyard/config';
import { createRuntime, type Runtime } from '@mailyard/runtime';
import { buildMsa, defaultDeps as msaDeps, msaSchema, type Msa, type MsaParts } from '@mailyard/service-msa';
import { startTcpProxy, tempDir, type TcpProxy } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform, type PlatformOptions } from '../../../test/harness.js';
import { startRetrieval, type Retrieval } from '../../retrieval/test/helpers.js';
import { buildWebmail, defaultDeps, webmailSchema, type Webmail, type WebmailDeps } from '../src/index.js';

export const PASSWORD = 'correct horse battery staple';
export const SECRET = 'the-webmail-service-secret-for-tests';
export const HOST = 'mail.mailyard.test';
export const ALICE = 'alice@example.test';
export const BOB = 'bob@example.test';

/** Dependencies a test may replace (two-factor with a clock of its own, a directory that fails, a registry to read). */
export type ExtraDeps = Partial<
  Pick<WebmailDeps, 'twoFactor' | 'secondFactor' | 'directory' | 'authenticator' | 'redis' | 'registry'>
>;

export interface WebmailTestbed {
  p: Platform;
  retrieval: Retrieval;
  msa: Msa;
  webmail: Webmail;
  /** The certificate every client trusts (the platform's). */
  ca: string;
  /** Its key, for a stand-in server the webmail trusts. */
  key: string;
  /**
   * Builds another webmail on the same platform (other settings); stopped with the testbed.
   * `setup` runs before it starts (routes a test adds to its app).
   */
  another(
    overrides: Record<string, unknown>,
    deps?: ExtraDeps,
    setup?: (webmail: Webmail) => void,
  ): Promise<Webmail>;
  /** Builds another msa (other settings, e.g. another broker); stopped with the testbed. */
  anotherMsa(overrides: Record<string, unknown>): Promise<Msa>;
  close(): Promise<void>;
}

export async function startWebmailTestbed(
  opts: {
    platform?: PlatformOptions;
    webmail?: Record<string, unknown>;
    /** Settings of the msa (DKIM signing is off unless set here). */
    msa?: Record<string, unknown>;
    msaParts?: MsaParts;
  } = {},
): Promise<WebmailTestbed> {
  const p = await startPlatform(opts.platform);
  await addAccount(p.directory, ALICE);
  await addAccount(p.directory, BOB);
  const tmp = tempDir('mailyard-webmail-');
  const pair = selfSignedCertificate(HOST);
  writeFileSync(join(tmp.path, 'cert.pem'), pair.cert);
  writeFileSync(join(tmp.path, 'key.pem'), pair.key);
  const tls = { tls_cert_file: join(tmp.path, 'cert.pem'), tls_key_file: join(tmp.path, 'key.pem') };
  const serviceLogin = { service_login_password: SECRET, service_login_networks: '127.0.0.0/8' };
  const common = {
    amqp_url: p.env.AMQP_URL,
    redis_url: p.env.REDIS_URL,
    redis_prefix: p.env.REDIS_PREFIX,
    http_port: 0,
    listen_address: '127.0.0.1',
    log_level: process.env.TEST_LOG_LEVEL ?? 'silent',
    myhostname: HOST,
    dns_servers: p.env.DNS_SERVERS,
  };

  const retrieval = await startRetrieval(p, { ...tls, ...serviceLogin, myhostname: HOST });

  const msas: { msa: Msa; rt: Runtime }[] = [];
  const buildAnotherMsa = async (overrides: Record<string, unknown>, parts?: MsaParts) => {
    const msaConfig = loadConfig(msaSchema, {
      env: {},
      overrides: {
        ...common,
        ...tls,
        ...serviceLogin,
        submission_port: 0,
        submissions_port: 0,
        policy_enabled: !!opts.platform?.policy,
        dkim_signing: false,
        ...overrides,
      },
    });
    const rt = await createRuntime('msa', msaConfig);
    const msa = buildMsa(msaConfig, msaDeps(msaConfig, rt, parts));
    await msa.start();
    msas.push({ msa, rt });
    await rt.bus.waitConnected();
    return msa;
  };
  const msa = await buildAnotherMsa(opts.msa ?? {}, opts.msaParts);

  const built: { webmail: Webmail; rt: Runtime }[] = [];
  const build = async (
    overrides: Record<string, unknown>,
    deps: ExtraDeps = {},
    setup?: (webmail: Webmail) => void,
  ) => {
    const config = loadConfig(webmailSchema, {
      env: {},
      overrides: {
        ...common,
        ...tls,
        service_login_password: SECRET,
        webmail_port: 0,
        imap_server: `127.0.0.1:${retrieval.ports.imaps}`,
        submission_server: `127.0.0.1:${msa.ports.submissions}`,
        upstream_tls_ca_file: tls.tls_cert_file,
        // each test client comes from an address of its own (X-Forwarded-For), so the
        // login rate limit and lockout of one test do not reach another
        trusted_proxies: '127.0.0.0/8',
        ...(opts.webmail ?? {}),
        ...overrides,
      },
    });
    const rt = await createRuntime('webmail', config);
    const webmail = buildWebmail(config, { ...defaultDeps(config, rt), ...deps });
    setup?.(webmail);
    await webmail.start();
    built.push({ webmail, rt });
    return webmail;
  };
  const webmail = await build({});

  return {
    p,
    retrieval,
    msa,
    webmail,
    ca: pair.cert,
    key: pair.key,
    another: build,
    anotherMsa: buildAnotherMsa,
    async close() {
      for (const b of built) {
        await b.webmail.stop();
        await b.rt.close();
      }
      for (const m of msas) {
        await m.msa.stop();
        await m.rt.close();
      }
      await retrieval.stop();
      await p.close();
      tmp.cleanup();
    },
  };
}

/**
 * Another webmail of `t` whose IMAP goes through a proxy the test can hold (its answers
 * then never come), with IMAP_TIMEOUT at 2 s; the proxy is closed with `close()`.
 */
export async function webmailOnStallableImap(
  t: WebmailTestbed,
): Promise<{ proxy: TcpProxy; port: number; close(): Promise<void> }> {
  const proxy = await startTcpProxy({ host: '127.0.0.1', port: t.retrieval.ports.imaps });
  const w = await t.another({ imap_server: `127.0.0.1:${proxy.port}`, imap_timeout: '2s' });
  return {
    proxy,
    port: w.port,
    async close() {
      proxy.release();
      await proxy.close();
    },
  };
}
