// The deployment files cannot be run here (no container engine), so this checks what a
// person running `docker compose up` would otherwise find out the hard way: the compose
// file follows the Compose Specification, every setting it passes is one the service
// reads, nothing waits on a dependency that can never become healthy, relaying stays
// closed, Prometheus scrapes the ports the services listen on, and the dashboards use its
// data source (test/deploy-runtime.test.ts runs the image's layout and checks their metrics). The image's build step (scripts/build-service.mjs) is run for real.
import assert from 'node:assert/strict';
import { createResolver } from '@mailyard/dns';
import { createTestRedis, freePort, startDnsServer, waitFor } from '@mailyard/testkit';
import { spawn, spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import {
  existsSync,
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import draft07MetaSchema from 'ajv/dist/refs/json-schema-draft-07.json' with { type: 'json' };
import { parse as parseYaml } from 'yaml';
import { ipInNetworks, parseCidr } from '@mailyard/config';
// This test is not a service: it checks the deployment against every service's config schema.
import { deliverySchema } from '@mailyard/service-delivery';
import { mtaInboundSchema } from '@mailyard/service-mta-inbound';
import { msaSchema } from '@mailyard/service-msa';
import { outboundRelaySchema } from '@mailyard/service-outbound-relay';
import { policySchema } from '@mailyard/service-policy';
import { retrievalSchema } from '@mailyard/service-retrieval';
import { webmailSchema } from '@mailyard/service-webmail';

const root = new URL('..', import.meta.url).pathname;
const read = (path: string) => readFileSync(join(root, path), 'utf8');

/** Config schema of each service built from deploy/Dockerfile, by its directory in services/. */
const serviceSchemas: Record<
  string,
  | typeof mtaInboundSchema
  | typeof deliverySchema
  | typeof msaSchema
  | typeof outboundRelaySchema
  | typeof policySchema
  | typeof retrievalSchema
  | typeof webmailSchema
> = {
  'mta-inbound': mtaInboundSchema,
  delivery: deliverySchema,
  msa: msaSchema,
  'outbound-relay': outboundRelaySchema,
  policy: policySchema,
  retrieval: retrievalSchema,
  webmail: webmailSchema,
};

type Env = Record<string, string | number | boolean | null>;
interface ComposeService {
  image?: string;
  networks?: string[] | Record<string, { ipv4_address?: string } | null>;
  dns?: string | string[];
  build?: string | { context?: string; dockerfile?: string; args?: Record<string, string> | string[] };
  environment?: Env | string[];
  healthcheck?: { test?: string | string[]; disable?: boolean };
  stop_grace_period?: string;
  depends_on?: string[] | Record<string, { condition: string }>;
  volumes?: (string | { type?: string; source?: string })[];
  ports?: (string | number | object)[];
  secrets?: (string | { source: string; target?: string })[];
  command?: string | string[];
}
interface Compose {
  services: Record<string, ComposeService>;
  networks?: Record<string, { ipam?: { config?: { subnet?: string; ip_range?: string }[] } } | null>;
  volumes?: Record<string, unknown>;
}

const composeText = read('docker-compose.yml');
const compose = parseYaml(composeText) as Compose;
const dockerfile = read('deploy/Dockerfile');

/**
 * Environment as a map, whichever of the two forms compose allows was used, with
 * `${VAR:-default}` replaced by the default, as compose does when VAR is unset.
 */
/** A port below the ephemeral range, free for both UDP and TCP on 127.0.0.1. */
async function freeUdpTcpPort(): Promise<number> {
  for (;;) {
    const port = await freePort();
    const udp = createSocket('udp4');
    const free = await new Promise<boolean>((resolve) => {
      udp.once('error', () => resolve(false));
      udp.bind(port, '127.0.0.1', () => resolve(true));
    });
    udp.close();
    if (free) return port;
  }
}

/** Values for the variables docker-compose.yml requires, as `mailyard setup` would write them. */
const REQUIRED_SAMPLE: Record<string, string> = { MYHOSTNAME: 'mail.example.org' };

function envOf(svc: ComposeService): Record<string, string> {
  const env = svc.environment ?? {};
  if (Array.isArray(env)) {
    // A bare KEY passes the host's value through; here it only counts as set.
    return Object.fromEntries(
      env.map((e) => (e.includes('=') ? [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)] : [e, ''])),
    );
  }
  return Object.fromEntries(
    Object.entries(env).map(([k, v]) => [
      k,
      v === null
        ? ''
        : String(v)
            .replace(/\$\{[A-Z_]+:-([^}]*)\}/g, '$1')
            // a variable compose requires (`${MYHOSTNAME:?run mailyard setup first}`): what
            // `mailyard setup` writes to .env
            .replace(/\$\{([A-Z_]+):\?[^}]*\}/g, (_, name: string) => REQUIRED_SAMPLE[name] ?? 'x'),
    ]),
  );
}

/** The service directory a compose service is built from (build arg SERVICE), if any. */
function builtService(svc: ComposeService): string | undefined {
  if (typeof svc.build !== 'object') return undefined;
  const args = svc.build.args;
  if (Array.isArray(args)) return args.find((a) => a.startsWith('SERVICE='))?.slice('SERVICE='.length);
  return args?.SERVICE;
}

/** `${VAR:-default}` as compose reads it with VAR unset. */
const withDefaults = (text: string) => text.replace(/\$\{[A-Z_]+:-([^}]*)\}/g, '$1');

const mailyardServices = Object.entries(compose.services).filter(([, svc]) => builtService(svc));

function healthyDependencies(svc: ComposeService): string[] {
  const deps = svc.depends_on;
  if (!deps || Array.isArray(deps)) return [];
  return Object.entries(deps)
    .filter(([, d]) => d.condition === 'service_healthy')
    .map(([name]) => name);
}

/** A health check that Docker will run: in the compose file, or baked into our image. */
function hasHealthcheck(svc: ComposeService): boolean {
  if (svc.healthcheck) return svc.healthcheck.disable !== true && svc.healthcheck.test !== undefined;
  return builtService(svc) !== undefined && /^HEALTHCHECK\s+(?!NONE)/m.test(dockerfile);
}

describe('docker-compose.yml', () => {
  test('is valid under the Compose Specification schema', () => {
    const schema = JSON.parse(read('deploy/compose-spec.schema.json')) as Record<string, unknown>;
    // The Compose schema is draft-07, the dialect of Ajv's default class. It names the
    // meta-schema by its https address, which Ajv knows only under http, so it is added
    // under that name too and the vendored schema is itself checked against draft-07.
    // Strict mode is for schemas one writes; this one uses union types throughout.
    const ajv = new Ajv({ allErrors: true, strict: false });
    ajv.addMetaSchema({ ...draft07MetaSchema, $id: 'https://json-schema.org/draft-07/schema' });
    addFormatsModule.default(ajv);
    assert.equal(schema.$schema, 'https://json-schema.org/draft-07/schema');
    const validate = ajv.compile(schema);
    const valid = validate(compose);
    const problems = (validate.errors ?? []).map(
      (e) => `${e.instancePath || '/'}: ${e.message ?? ''} ${JSON.stringify(e.params)}`,
    );
    assert.ok(valid, problems.join('\n'));

    // The validator is not vacuous: a misspelt key is refused.
    const misspelt = structuredClone(compose) as unknown as Record<string, Record<string, object>>;
    misspelt.services!.redis = { ...misspelt.services!.redis, depend_on: ['rabbitmq'] };
    assert.equal(validate(misspelt), false);
  });

  test('names every image by a fixed version, never latest or a floating tag', () => {
    const dockerfiles = ['deploy/Dockerfile', 'deploy/unbound/Dockerfile'].map(read);
    const images = [
      ...Object.values(compose.services).flatMap((s) => (s.image ? [withDefaults(s.image)] : [])),
      ...dockerfiles.flatMap((d) =>
        [...d.matchAll(/^(?:FROM|ARG NODE_IMAGE=)\s*(\S+)/gm)]
          .map((m) => m[1]!)
          .filter((i) => !i.startsWith('$') && !/^(base|build|prod-deps)$/.test(i)),
      ),
    ];
    assert.ok(images.length >= 12, images.join(' '));
    for (const image of images) {
      const tag = image.split(':')[1] ?? '';
      // major.minor.patch (with a variant: 3.13.7-management, 20.20.2-bookworm-slim), a
      // Debian point release (12.11-slim), or `dev` for our own, built from this checkout
      assert.ok(
        /^v?\d+\.\d+\.\d+(-[a-z0-9.-]+)?$/.test(tag) ||
          /^debian:\d+\.\d+-slim$/.test(image) ||
          /^mailyard\/[a-z-]+:dev$/.test(image),
        image,
      );
    }
  });

  test('runs every service in services/ and builds each from deploy/Dockerfile', () => {
    const inRepo = readdirSync(join(root, 'services')).filter((d) =>
      existsSync(join(root, 'services', d, 'src', 'main.ts')),
    );
    assert.deepEqual(mailyardServices.map(([, svc]) => builtService(svc)).sort(), [...inRepo].sort());
    for (const [name, svc] of mailyardServices) {
      assert.ok(typeof svc.build === 'object');
      assert.equal(svc.build.dockerfile, 'deploy/Dockerfile', name);
      assert.equal(svc.build.context ?? '.', '.', `${name}: the build context must be the repository root`);
      assert.ok(builtService(svc)! in serviceSchemas, `${name}: no config schema known to this test`);
    }
  });

  test('passes each Mailyard service only settings it has', () => {
    for (const [name, svc] of mailyardServices) {
      const schema = serviceSchemas[builtService(svc)!]!;
      const known = new Set(Object.keys(schema.shape).map((k) => k.toUpperCase()));
      known.add('MAILYARD_CONFIG'); // the optional YAML file
      for (const key of Object.keys(envOf(svc))) {
        assert.ok(known.has(key), `${name}: ${key} is not a setting of this service`);
      }
    }
  });

  test('gives each Mailyard service values its schema accepts', () => {
    for (const [name, svc] of mailyardServices) {
      const schema = serviceSchemas[builtService(svc)!]!;
      const env = Object.fromEntries(Object.entries(envOf(svc)).map(([k, v]) => [k.toLowerCase(), v]));
      const result = schema.safeParse(env);
      assert.ok(
        result.success,
        `${name}: ${result.error?.issues.map((i) => i.path.join('.') + ': ' + i.message).join('; ')}`,
      );
    }
  });

  test('counts a Mailyard service healthy only when its /readyz on HTTP_PORT says ready', () => {
    const imageProbe = /^HEALTHCHECK [^\n]*\\\n\s*CMD (.*)$/m.exec(dockerfile)?.[1] ?? '';
    for (const [name, svc] of mailyardServices) {
      // the compose file's own, or else the image's
      const probe = svc.healthcheck ? [svc.healthcheck.test ?? []].flat().join(' ') : imageProbe;
      assert.match(probe, /process\.env\.HTTP_PORT \+ '\/readyz'/, `${name}: health check ${probe}`);
      assert.match(probe, /r\.ok \? 0 : 1/, `${name}: healthy only on a 2xx answer`);
    }
  });

  test('lets each Mailyard service stop by itself: stop_grace_period above its SHUTDOWN_GRACE', () => {
    const ms = (d: string) => {
      const parts = [...d.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)];
      assert.ok(parts.length && parts.map((p) => p[0]).join('') === d, `a compose duration: ${d}`);
      const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
      return parts.reduce((sum, p) => sum + Number(p[1]) * unit[p[2] as keyof typeof unit], 0);
    };
    for (const [name, svc] of mailyardServices) {
      const schema = serviceSchemas[builtService(svc)!]!;
      const env = Object.fromEntries(Object.entries(envOf(svc)).map(([k, v]) => [k.toLowerCase(), v]));
      const grace = schema.parse(env).shutdown_grace;
      // docker's own default when the key is absent
      const stop = ms(svc.stop_grace_period ?? '10s');
      // the process exits at the end of the grace period; SIGKILL would cut its goodbyes short
      assert.ok(stop >= grace + 2000, `${name}: stop_grace_period ${stop} ms, SHUTDOWN_GRACE ${grace} ms`);
    }
  });

  test('starts nothing before its dependencies are healthy, and each of those has a health check', () => {
    for (const [name, svc] of Object.entries(compose.services)) {
      const healthyDeps = healthyDependencies(svc);
      assert.ok(hasHealthcheck(svc) || healthyDeps.length > 0, `${name}: no health check, waits on nothing`);
      for (const dep of healthyDeps) {
        const target = compose.services[dep];
        assert.ok(target, `${name} depends on ${dep}, which is not defined`);
        // Otherwise `docker compose up` waits forever.
        assert.ok(
          hasHealthcheck(target),
          `${name} waits for ${dep} to be healthy, but ${dep} has no health check`,
        );
      }
    }
    for (const [name, svc] of mailyardServices) {
      // and the resolver, for those that look names up (checked below); the SMTP intakes
      // also the policy service, without which every session waits for its timeout
      const deps = healthyDependencies(svc).filter((d) => d !== 'unbound');
      const needed = ['mta-inbound', 'msa'].includes(builtService(svc)!) ? ['policy'] : [];
      assert.deepEqual(deps.sort(), ['rabbitmq', 'redis', ...needed].sort(), name);
      const env = envOf(svc);
      assert.match(env.AMQP_URL ?? '', /^amqp:\/\/.*@rabbitmq:5672/, `${name}: AMQP_URL`);
      assert.match(env.REDIS_URL ?? '', /^redis:\/\/redis:6379/, `${name}: REDIS_URL`);
    }
  });

  test('has no default password: every one is a generated secret, passed as a file', () => {
    // none in the file, none as a default of a variable, no credentials in a URL
    const settings = composeText.replace(/^\s*#.*$/gm, '');
    assert.doesNotMatch(settings, /PASSWORD:-|PASS:-|_PASSWORD:|_PASS:/);
    assert.doesNotMatch(settings, /:\/\/[^/@\s]*:[^/@\s]*@/);
    const secrets = (parseYaml(composeText) as { secrets: Record<string, { file: string }> }).secrets;
    for (const [name, s] of Object.entries(secrets)) assert.match(s.file, /^\.\/secrets\//, name);
    const mounted = (svc: ComposeService) =>
      (svc.secrets ?? []).map((s) => (typeof s === 'string' ? s : s.source));
    for (const [name, svc] of mailyardServices) {
      const env = envOf(svc);
      assert.equal(env.AMQP_PASSWORD_FILE, '/run/secrets/rabbitmq-password', name);
      assert.equal(env.REDIS_PASSWORD_FILE, '/run/secrets/redis-password', name);
      assert.deepEqual(mounted(svc).sort(), ['rabbitmq-password', 'redis-password'], name);
    }
    assert.match(String(compose.services.redis?.command), /--include,\/run\/secrets\/redis-conf/);
    assert.equal(
      envOf(compose.services.grafana!).GF_SECURITY_ADMIN_PASSWORD__FILE,
      '/run/secrets/grafana-admin-password',
    );
    // the settings every service needs from setup are required, not defaulted
    assert.match(composeText, /MYHOSTNAME: \$\{MYHOSTNAME:\?/);
  });

  test('keeps mynetworks (who may relay) on loopback', () => {
    const inbound = mailyardServices.filter(([, svc]) => builtService(svc) === 'mta-inbound');
    assert.equal(inbound.length, 1);
    const env = envOf(inbound[0]![1]);
    // Unset, the schema's default applies; either way only loopback addresses may be trusted.
    const networks = mtaInboundSchema.shape.mynetworks.parse(env.MYNETWORKS || undefined);
    assert.ok(networks.length > 0);
    for (const net of networks) {
      const cidr = parseCidr(net);
      assert.ok(cidr, net);
      const address = net.split('/')[0]!;
      const loopback =
        cidr.family === 4
          ? cidr.prefix >= 8 && ipInNetworks(address, ['127.0.0.0/8'])
          : cidr.prefix === 128 && ipInNetworks(address, ['::1/128']);
      assert.ok(loopback, `MYNETWORKS must not trust ${net}: clients there could relay to any domain`);
    }
  });

  test("the webmail's service login: a secret made at the first start, taken only from the containers' range", () => {
    const byDir = (dir: string) => mailyardServices.find(([, svc]) => builtService(svc) === dir)![1];
    const subnet = parseCidr(withDefaults(compose.networks?.default?.ipam?.config?.[0]?.subnet ?? ''))!;
    // the bridge gateway: the subnet's first host, which outside connections can come from
    const gateway = `${subnet.base >> 24n}.${(subnet.base >> 16n) & 255n}.${(subnet.base >> 8n) & 255n}.${(subnet.base & 255n) + 1n}`;
    for (const dir of ['webmail', 'retrieval', 'msa']) {
      const env = envOf(byDir(dir));
      assert.equal(
        env.SERVICE_LOGIN_PASSWORD,
        undefined,
        `${dir}: no password written into the compose file`,
      );
      assert.match(env.SERVICE_LOGIN_PASSWORD_FILE ?? '', /^\/run\/mailyard-secrets\//, dir);
      if (dir === 'webmail') continue;
      const networks = retrievalSchema.shape.service_login_networks.parse(
        env.SERVICE_LOGIN_NETWORKS || undefined,
      );
      for (const n of networks)
        assert.ok(ipInNetworks(n.split('/')[0]!, [subnet]), `${dir}: ${n} inside the compose subnet`);
      assert.ok(
        !ipInNetworks(gateway, networks),
        `${dir}: the gateway ${gateway} may not use the service login`,
      );
    }
    // the secret's volume: the container that writes it and the three that read it
    const mounting = Object.entries(compose.services)
      .filter(([, svc]) =>
        (svc.volumes ?? []).some((v) => typeof v === 'string' && v.startsWith('service-secrets:')),
      )
      .map(([name]) => name)
      .sort();
    assert.deepEqual(mounting, ['msa', 'retrieval', 'service-secret', 'webmail']);
    assert.match(String(compose.services['service-secret']?.healthcheck?.test), /webmail-service-login/);
  });

  test('publishes SMTP on port 25 and gives every service a fixed, distinct metrics port', () => {
    const [, inbound] = mailyardServices.find(([, svc]) => builtService(svc) === 'mta-inbound')!;
    assert.equal(envOf(inbound).SMTP_PORT ?? '25', '25');
    assert.ok(
      inbound.ports?.some((p) =>
        typeof p === 'object'
          ? String((p as { published?: unknown }).published) === '25' &&
            (p as { target?: unknown }).target === 25
          : p === '25:25',
      ),
      'mta-inbound publishes port 25',
    );
    const ports = mailyardServices.map(([name, svc]) => {
      const port = Number(envOf(svc).HTTP_PORT);
      assert.ok(port > 0, `${name}: HTTP_PORT must be fixed (0 picks a random port Prometheus cannot find)`);
      return port;
    });
    assert.equal(new Set(ports).size, ports.length, 'HTTP_PORT values are distinct');
  });

  test('mounts files that exist and declares the named volumes it uses', () => {
    for (const [name, svc] of Object.entries(compose.services)) {
      for (const v of svc.volumes ?? []) {
        const source = typeof v === 'string' ? v.split(':')[0]! : (v.source ?? '');
        if (source.startsWith('./')) {
          // A missing bind-mount source is silently created as an empty directory.
          assert.ok(existsSync(join(root, source)), `${name}: ${source} does not exist`);
        } else if (source && !source.startsWith('/')) {
          assert.ok(
            compose.volumes && source in compose.volumes,
            `${name}: volume ${source} is not declared`,
          );
        }
      }
    }
  });
});

describe('the resolver (deploy/unbound)', () => {
  test('every service that looks names up asks it, at its fixed address on the compose network', () => {
    const unbound = compose.services.unbound;
    assert.ok(unbound, 'no unbound service');
    assert.ok(typeof unbound.build === 'object' && unbound.build.context === 'deploy/unbound');
    assert.ok(unbound.healthcheck?.test, 'the resolver has a health check');
    assert.equal(unbound.ports, undefined, 'the resolver is not published');
    const nets = unbound.networks as Record<string, { ipv4_address?: string }>;
    const ip = withDefaults(nets.default?.ipv4_address ?? '');
    const ipam = compose.networks?.default?.ipam?.config?.[0];
    const subnet = withDefaults(ipam?.subnet ?? '');
    const range = withDefaults(ipam?.ip_range ?? '');
    assert.ok(ipInNetworks(ip, [parseCidr(subnet)!]), `${ip} is inside the compose subnet ${subnet}`);
    // Docker hands out addresses from ip_range only: no other container can take this one
    assert.ok(ipInNetworks(range.split('/')[0]!, [parseCidr(subnet)!]), `${range} is inside ${subnet}`);
    assert.ok(!ipInNetworks(ip, [parseCidr(range)!]), `${ip} is outside the dynamic range ${range}`);

    // a service whose code makes DNS lookups (through the shared resolver) must be told
    // to use this one, and must wait for it
    let users = 0;
    for (const [name, svc] of mailyardServices) {
      const srcDir = join(root, 'services', builtService(svc)!, 'src');
      const usesDns = readdirSync(srcDir, { recursive: true, encoding: 'utf8' }).some(
        (f) => f.endsWith('.ts') && /\bresolver\b/.test(readFileSync(join(srcDir, f), 'utf8')),
      );
      if (!usesDns) continue;
      users++;
      assert.equal(envOf(svc).DNS_SERVERS, `${ip}:53`, `${name}: DNS_SERVERS`);
      assert.ok(healthyDependencies(svc).includes('unbound'), `${name} waits for the resolver`);
    }
    assert.ok(users >= 4, `${users} services look names up`);
    // rspamd's DNSBL and URIBL lookups too (through Docker's DNS, which forwards there)
    const rspamdDns = [compose.services.rspamd?.dns ?? []].flat().map(withDefaults);
    assert.deepEqual(rspamdDns, [ip]);
  });

  test('its configuration is valid, and answers come from its cache for their TTL', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'mailyard-unbound-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const dns = await startDnsServer({
      'example.test': {
        MX: [{ priority: 10, exchange: 'mx.example.test' }],
        TXT: ['v=spf1 ip4:192.0.2.0/24 -all'],
      },
      'mx.example.test': { A: ['192.0.2.25'] },
    });
    t.after(() => dns.close());
    // unbound listens on UDP and TCP: a port below the ephemeral range (an ephemeral one
    // is soon some outgoing connection's local port), free on both
    const port = await freeUdpTcpPort();

    // the deployed file, changed only where a test must: loopback and a free port, no
    // user switch, no root trust anchor (no Internet here), and our test zone as a stub
    // (unbound answers the special-use name test. itself unless told otherwise)
    let conf = read('deploy/unbound/unbound.conf');
    const change = (re: RegExp, by: string) => {
      assert.match(conf, re);
      conf = conf.replace(re, by);
    };
    change(/^ {2}interface: 0\.0\.0\.0$/m, '  interface: 127.0.0.1');
    change(/^ {2}port: 53$/m, `  port: ${port}`);
    change(/^ {2}username: .*$/m, '  username: ""');
    change(
      /^ {2}auto-trust-anchor-file: .*$/m,
      '  domain-insecure: "test"\n  local-zone: "test." nodefault\n  do-not-query-localhost: no',
    );
    change(/^ {2}control-interface: .*$/m, `  control-interface: ${join(dir, 'ctl')}`);
    conf += `\nstub-zone:\n  name: "test"\n  stub-addr: ${dns.address.replace(':', '@')}\n`;
    writeFileSync(join(dir, 'unbound.conf'), conf);
    const check = spawnSync('unbound-checkconf', [join(dir, 'unbound.conf')], { encoding: 'utf8' });
    assert.equal(check.status, 0, check.stderr + check.stdout);

    const unbound = spawn('unbound', ['-d', '-p', '-c', join(dir, 'unbound.conf')], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    unbound.stderr.setEncoding('utf8').on('data', (d: string) => (log += d));
    let exitedWith: string | undefined;
    unbound.once('exit', (code, signal) => (exitedWith = `exited (${signal ?? code})`));
    t.after(() => unbound.kill());
    // without the in-process cache, so the questions repeated below reach unbound; a
    // question unbound asks on of this process's server is answered within seconds on a
    // busy machine, not always within half of one
    const resolver = createResolver({
      servers: [`127.0.0.1:${port}`],
      timeoutMs: 5000,
      tries: 1,
      cache: false,
    });
    const mx = await waitFor(() => resolver.resolveMx('example.test').catch(() => undefined), {
      what: 'unbound answering',
    }).catch((err: Error) => assert.fail(`${err.message}; unbound ${exitedWith ?? 'running'}:\n${log}`));
    assert.deepEqual(mx, [{ exchange: 'mx.example.test', priority: 10 }]);
    const ask = async () => [
      await resolver.resolveMx('example.test'),
      await resolver.resolveTxt('example.test'),
      await resolver.resolve4('mx.example.test'),
      await resolver.resolve4('nowhere.example.test').catch((err: NodeJS.ErrnoException) => err.code),
    ];
    const first = await ask();
    assert.deepEqual(first.slice(1), [[['v=spf1 ip4:192.0.2.0/24 -all']], ['192.0.2.25'], 'ENOTFOUND']);
    const asked = dns.queries.length;
    for (let i = 0; i < 5; i++) assert.deepEqual(await ask(), first);
    assert.equal(dns.queries.length, asked, 'the same questions again are answered from the cache');
  });
});

describe('deploy/Dockerfile', () => {
  test('builds the service named by ARG SERVICE and runs it as an unprivileged user', () => {
    assert.match(dockerfile, /^ARG SERVICE$/m);
    // a fixed Node release (no floating major tag), the one the tests run on
    assert.match(dockerfile, new RegExp(`^ARG NODE_IMAGE=node:${process.versions.node}-bookworm-slim$`, 'm'));
    assert.match(dockerfile, /pnpm install --frozen-lockfile/);
    assert.match(
      dockerfile,
      /pnpm --filter "@mailyard\/service-\$\{SERVICE\}" --filter @mailyard\/cli run build/,
    );
    assert.match(dockerfile, /services\/\$\{SERVICE\}\/dist\/main\.js/);
    const users = [...dockerfile.matchAll(/^USER\s+(\S+)/gm)].map((m) => m[1]);
    assert.ok(users.length > 0 && users.at(-1) !== 'root' && users.at(-1) !== '0', 'runs as a non-root user');
    assert.match(dockerfile, /^HEALTHCHECK .*\n.*process\.env\.HTTP_PORT \+ '\/readyz'.*r\.ok \? 0 : 1/m);
  });

  test('puts the admin CLI on the PATH of every image, built from the same workspace', () => {
    assert.match(dockerfile, /COPY --from=build \/app\/packages\/cli\/dist \/app\/packages\/cli\/dist/);
    assert.match(
      dockerfile,
      /exec node \/app\/packages\/cli\/dist\/main\.js "\$@"\\n' >\/usr\/local\/bin\/mailyard/,
    );
    // checked as the service user at build time, as the service's own bundle is
    assert.match(dockerfile, /--check-config && mailyard --help/);
    const pkg = JSON.parse(read('packages/cli/package.json')) as { scripts?: Record<string, string> };
    assert.equal(pkg.scripts?.build, 'node ../../scripts/build-service.mjs');
  });

  test('documents the build of every service', () => {
    for (const [, svc] of mailyardServices) {
      assert.match(dockerfile, new RegExp(`--build-arg SERVICE=${builtService(svc)!}\\b`));
    }
  });

  test('installs the pnpm version the repository pins', () => {
    const pkg = JSON.parse(read('package.json')) as { packageManager: string };
    const pinned = pkg.packageManager.replace(/^pnpm@/, '').split('+')[0];
    assert.match(dockerfile, new RegExp(`^ARG PNPM_VERSION=${pinned!.replace(/\./g, '\\.')}$`, 'm'));
  });

  test('is not sent node_modules, build output, keys or secrets with the context', () => {
    const ignored = read('.dockerignore').split('\n');
    for (const p of ['**/node_modules', '**/dist', '.git']) assert.ok(ignored.includes(p), p);
    // The mta-inbound section mounts ./deploy/tls; a private key there must not end up in an image layer.
    for (const p of ['deploy/tls', '**/*.key', '.env']) assert.ok(ignored.includes(p), p);
  });
});

describe('deploy/ configuration', () => {
  test("RabbitMQ's max_message_size is above mta-inbound's message_size_limit", () => {
    const conf = read('deploy/rabbitmq/rabbitmq.conf');
    const max = Number(/^max_message_size\s*=\s*(\d+)\s*$/m.exec(conf)?.[1]);
    assert.ok(max > 0, 'max_message_size is set');
    const [, inbound] = mailyardServices.find(([, svc]) => builtService(svc) === 'mta-inbound')!;
    const limit = mtaInboundSchema.shape.message_size_limit.parse(
      envOf(inbound).MESSAGE_SIZE_LIMIT || undefined,
    );
    // Headroom for the trace headers mta-inbound adds and the AMQP properties.
    assert.ok(max >= limit + 1024 * 1024, `max_message_size ${max} must exceed message_size_limit ${limit}`);
    assert.ok(max <= 512 * 1024 * 1024, "RabbitMQ's ceiling for max_message_size is 512 MiB");
  });

  test("RabbitMQ's consumer_timeout outlasts outbound's longest waits for one message", () => {
    const conf = read('deploy/rabbitmq/rabbitmq.conf');
    const timeout = Number(/^consumer_timeout\s*=\s*(\d+)\s*$/m.exec(conf)?.[1]);
    // a run tries a few addresses, each with its connection, transfer and the reply after
    // the message, batch after batch: well above the 30-minute default
    const longest =
      outboundRelaySchema.shape.smtp_connect_timeout.parse(undefined) +
      outboundRelaySchema.shape.smtp_data_xfer_timeout.parse(undefined) +
      outboundRelaySchema.shape.smtp_data_done_timeout.parse(undefined);
    assert.ok(timeout >= 5 * longest, `consumer_timeout ${timeout} ms, one address's waits ${longest} ms`);
  });

  test('Prometheus scrapes each Mailyard service on its HTTP_PORT', () => {
    const prom = parseYaml(read('deploy/prometheus/prometheus.yml')) as {
      scrape_configs: {
        job_name: string;
        static_configs?: { targets: string[] }[];
        // scaled services: every replica, found through Docker's DNS
        dns_sd_configs?: { names: string[]; port: number }[];
      }[];
    };
    const targets = new Set(
      prom.scrape_configs.flatMap((c) => [
        ...(c.static_configs ?? []).flatMap((s) => s.targets),
        ...(c.dns_sd_configs ?? []).flatMap((d) => d.names.map((n) => `${n}:${d.port}`)),
      ]),
    );
    for (const [name, svc] of mailyardServices) {
      const target = `${name}:${envOf(svc).HTTP_PORT}`;
      assert.ok(targets.has(target), `prometheus.yml has no target ${target}`);
    }
  });

  test('the Grafana dashboards use the provisioned data source', () => {
    const datasources = parseYaml(read('deploy/grafana/provisioning/datasources/prometheus.yml')) as {
      datasources: { uid: string; url: string }[];
    };
    const uids = new Set(datasources.datasources.map((d) => d.uid));
    assert.ok(datasources.datasources.some((d) => d.url === 'http://prometheus:9090'));
    const dashboardDir = 'deploy/grafana/dashboards';
    const files = readdirSync(join(root, dashboardDir)).filter((f) => f.endsWith('.json'));
    assert.ok(files.length > 0);
    // (test/deploy-runtime.test.ts checks that the queries name only metrics the services export)
    for (const f of files) {
      interface Panel {
        title: string;
        type: string;
        datasource?: { uid: string };
        targets?: { expr: string; datasource?: { uid: string } }[];
        fieldConfig?: {
          defaults?: { unit?: string };
          overrides?: { properties: { id: string }[] }[];
        };
      }
      const dashboard = JSON.parse(read(join(dashboardDir, f))) as { panels: Panel[] };
      const panels = dashboard.panels.filter((p) => p.type !== 'row');
      assert.ok(panels.length > 0, `${f} has panels`);
      for (const panel of panels) {
        // one unit per axis: set for the panel, and no series given another
        assert.ok(panel.fieldConfig?.defaults?.unit, `${f} / ${panel.title}: no unit`);
        const units = (panel.fieldConfig.overrides ?? [])
          .flatMap((o) => o.properties)
          .filter((p) => p.id === 'unit');
        assert.equal(units.length, 0, `${f} / ${panel.title}: a second unit`);
        for (const t of panel.targets ?? []) {
          const uid = t.datasource?.uid ?? panel.datasource?.uid;
          assert.ok(uid && uids.has(uid), `${f} / ${panel.title}: data source ${uid} is not provisioned`);
        }
      }
    }
  });
});

describe('scripts/build-service.mjs', () => {
  const out = mkdtempSync(join(tmpdir(), 'mailyard-build-'));
  after(() => rmSync(out, { recursive: true, force: true }));
  const node = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, args, {
      encoding: 'utf8',
      timeout: 60_000,
      // Only what the test sets: a developer's own SMTP_PORT must not change the outcome.
      env: { PATH: process.env.PATH ?? '', ...env },
    });
  const built = new Map<string, string>();
  /** Builds a service the way its `pnpm build` does, into a temporary directory. */
  const bundle = (service: string): string => {
    const existing = built.get(service);
    if (existing) return existing;
    const dir = join(out, service);
    const res = spawnSync(process.execPath, [join(root, 'scripts', 'build-service.mjs'), '--outdir', dir], {
      cwd: join(root, 'services', service),
      encoding: 'utf8',
      timeout: 120_000,
    });
    assert.equal(res.status, 0, res.stderr);
    built.set(service, join(dir, 'main.js'));
    return join(dir, 'main.js');
  };

  test('inlines our packages and links every third-party package the bundle imports', () => {
    for (const service of Object.keys(serviceSchemas)) {
      const main = bundle(service);
      const code = readFileSync(main, 'utf8');
      assert.doesNotMatch(code, /from ["']@mailyard\//, `${service}: workspace code is bundled`);
      const imported = new Set(
        [...code.matchAll(/^import .* from ["']([^"'.][^"']*)["'];?$/gm)]
          .map((m) => m[1]!)
          .filter((spec) => !spec.startsWith('node:'))
          .map((spec) =>
            spec
              .split('/')
              .slice(0, spec.startsWith('@') ? 2 : 1)
              .join('/'),
          ),
      );
      assert.ok(imported.size > 0, `${service}: third-party packages stay external`);
      for (const name of imported) {
        const link = join(main, '..', 'node_modules', name);
        assert.ok(lstatSync(link).isSymbolicLink(), `${service}: ${name} is linked`);
        assert.ok(existsSync(join(link, 'package.json')), `${service}: the link for ${name} resolves`);
      }
    }
  });

  test('the delivery bundle runs --check-config and exits 0', () => {
    const res = node([bundle('delivery'), '--check-config']);
    assert.equal(res.status, 0, res.stderr);
    assert.equal(res.stdout, 'delivery: configuration is valid\n');
  });

  test('the CLI bundle (as in every image) adds a domain to Redis and lists it', async () => {
    const dir = join(out, 'cli');
    const res = spawnSync(process.execPath, [join(root, 'scripts', 'build-service.mjs'), '--outdir', dir], {
      cwd: join(root, 'packages', 'cli'),
      encoding: 'utf8',
      timeout: 120_000,
    });
    assert.equal(res.status, 0, res.stderr);
    const r = createTestRedis();
    try {
      const env = { REDIS_URL: 'redis://127.0.0.1:6379', REDIS_PREFIX: r.prefix };
      const add = node([join(dir, 'main.js'), 'domain', 'add', 'bundle.test'], env);
      assert.equal(add.status, 0, add.stderr);
      const list = node([join(dir, 'main.js'), 'domain', 'list'], env);
      assert.match(list.stdout, /^bundle\.test$/m);
      const bad = node([join(dir, 'main.js'), 'domain', 'add', 'not a domain'], env);
      assert.notEqual(bad.status, 0);
      // backup and restore (tar-stream, linked beside the bundle) from one prefix to another
      const archive = join(out, 'cli-backup.tar.gz');
      const backup = node([join(dir, 'main.js'), 'backup', archive], {
        ...env,
        MAILDIR_ROOT: join(out, 'md1'),
      });
      assert.equal(backup.status, 0, backup.stderr);
      const r2 = createTestRedis();
      try {
        const env2 = { ...env, REDIS_PREFIX: r2.prefix, MAILDIR_ROOT: join(out, 'md2') };
        const restore = node([join(dir, 'main.js'), 'restore', archive], env2);
        assert.equal(restore.status, 0, restore.stderr);
        assert.match(node([join(dir, 'main.js'), 'domain', 'list'], env2).stdout, /^bundle\.test$/m);
      } finally {
        await r2.cleanup();
      }
    } finally {
      await r.cleanup();
    }
  });

  test('the mta-inbound bundle exits 78 with one line naming a bad setting', () => {
    const res = node([bundle('mta-inbound')], { SMTP_PORT: 'abc' });
    assert.equal(res.status, 78);
    const lines = res.stderr.trim().split('\n');
    assert.equal(lines.length, 1, res.stderr);
    assert.match(lines[0]!, /SMTP_PORT/);
  });
});
