import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { selfSignedCertificate } from '@mailyard/config';
import { freePort, waitFor } from '@mailyard/testkit';

/** Debian's pebble (ACME test CA), run on loopback by the tests. */
export const PEBBLE_BIN = process.env.PEBBLE_BIN ?? '/usr/bin/pebble';

export interface Pebble {
  /** ACME directory URL. */
  directoryUrl: string;
  /** PEM that signs pebble's own HTTPS certificate (ACME_CA_FILE). */
  caFile: string;
  /** The root of the certificates pebble issues (regenerated at every start). */
  root(): Promise<string>;
  stop(): Promise<void>;
}

const get = (url: string, ca: string) =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(url, { ca, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });

/**
 * Starts pebble validating HTTP-01 on `httpPort` of the addresses `dnsServer` (host:port)
 * gives, at full speed and without rejecting nonces (each is a documented pebble switch).
 */
export async function startPebble(opts: { httpPort: number; dnsServer: string }): Promise<Pebble> {
  const dir = mkdtempSync(join(tmpdir(), 'mailyard-pebble-'));
  const tls = selfSignedCertificate('localhost');
  writeFileSync(join(dir, 'cert.pem'), tls.cert);
  writeFileSync(join(dir, 'key.pem'), tls.key);
  const [acmePort, mgmtPort, tlsPort] = [await freePort(), await freePort(), await freePort()];
  writeFileSync(
    join(dir, 'pebble.json'),
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${acmePort}`,
        managementListenAddress: `127.0.0.1:${mgmtPort}`,
        certificate: join(dir, 'cert.pem'),
        privateKey: join(dir, 'key.pem'),
        httpPort: opts.httpPort,
        tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
      },
    }),
  );
  let output = '';
  const child: ChildProcess = spawn(
    PEBBLE_BIN,
    ['-config', join(dir, 'pebble.json'), '-dnsserver', opts.dnsServer, '-strict=false'],
    {
      env: { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const directoryUrl = `https://localhost:${acmePort}/dir`;
  const ca = tls.cert;
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`pebble exited: ${output}`);
        return (await get(directoryUrl, ca)).status === 200;
      },
      { timeoutMs: 20_000, intervalMs: 100, what: 'pebble to start' },
    );
  } catch (err) {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    directoryUrl,
    caFile: join(dir, 'cert.pem'),
    async root() {
      const r = await get(`https://localhost:${mgmtPort}/roots/0`, ca);
      if (r.status !== 200) throw new Error(`pebble root: HTTP ${r.status}`);
      return r.body;
    },
    async stop() {
      child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
