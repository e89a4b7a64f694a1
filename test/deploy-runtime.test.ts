// The runtime image as far as it can be built without a container engine: the layout
// deploy/Dockerfile's runtime stage copies (production node_modules and the bundles, no
// source), each service started from it by the image's own ENTRYPOINT, against a real
// broker and Redis. What those processes export on /metrics is then the inventory the
// Grafana dashboard and the alert rules are checked against: a panel or a rule may name
// only a metric that a service really exports.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { tempDir } from '@mailyard/testkit';
import { parse as parseYaml } from 'yaml';
import { freePort, startProcessTestbed, type ProcessTestbed, type ServiceProcess } from './processes.js';

const root = new URL('..', import.meta.url).pathname;
const read = (path: string) => readFileSync(join(root, path), 'utf8');
const dockerfile = read('deploy/Dockerfile');
const services = readdirSync(join(root, 'services')).filter((d) =>
  existsSync(join(root, 'services', d, 'src', 'main.ts')),
);

/** The runtime stage's `COPY --from=<stage> <src> <dest>` lines. */
const runtimeCopies = () => {
  const stage = dockerfile.slice(dockerfile.lastIndexOf('AS runtime'));
  return [...stage.matchAll(/^COPY --from=(\S+) (\S+) (\S+)$/gm)].map((m) => ({
    from: m[1]!,
    src: m[2]!,
    dest: m[3]!,
  }));
};

let image: ReturnType<typeof tempDir>;
let bed: ProcessTestbed;
/** Metric name -> the services that export it. */
const exported = new Map<string, Set<string>>();

before(async () => {
  for (const dir of [...services.map((s) => `services/${s}/dist`), 'packages/cli/dist'])
    assert.ok(existsSync(join(root, dir, 'main.js')), `${dir}/main.js: run \`pnpm build\` first`);
  image = tempDir();
  // prod-deps: the workspace's manifests and lockfile, `pnpm install --prod` from the store
  const manifests = ['package.json', 'pnpm-lock.yaml', 'pnpm-workspace.yaml', 'patches'];
  for (const group of ['packages', 'services'])
    for (const d of readdirSync(join(root, group)))
      if (existsSync(join(root, group, d, 'package.json'))) manifests.push(`${group}/${d}/package.json`);
  const deps = join(image.path, 'prod-deps');
  for (const f of manifests) {
    mkdirSync(join(deps, f, '..'), { recursive: true });
    cpSync(join(root, f), join(deps, f), { recursive: true });
  }
  const install = spawnSync('pnpm', ['install', '--frozen-lockfile', '--offline', '--prod'], {
    cwd: deps,
    encoding: 'utf8',
    timeout: 300_000,
    env: { ...process.env, CI: '1' },
  });
  assert.equal(install.status, 0, install.stderr + install.stdout);
  // runtime: exactly what its COPY lines take (a stage's /app is our checkout here)
  const app = join(image.path, 'app');
  for (const c of runtimeCopies()) {
    const from = c.from === 'prod-deps' ? deps : root;
    for (const service of c.src.includes('${SERVICE}') ? services : ['']) {
      const sub = (p: string) => p.replace('${SERVICE}', service).replace(/^\/app\/?/, '');
      cpSync(join(from, sub(c.src)), join(app, sub(c.dest)), { recursive: true, verbatimSymlinks: true });
    }
  }
  bed = await startProcessTestbed('runtime.test', []);
});
after(async () => {
  await bed?.close();
  image?.cleanup();
});

/** The image's ENTRYPOINT, run as the image runs it, for one service. */
function entrypoint(service: string) {
  const m = /^ENTRYPOINT (\[.*\])$/m.exec(dockerfile);
  assert.ok(m, 'an ENTRYPOINT in exec form');
  const [file, ...args] = JSON.parse(m[1]!) as string[];
  assert.equal(file, '/bin/sh');
  // `node` from the PATH in the image; here the one running this test
  const script = args[1]!.replace(/^exec node /, `exec ${JSON.stringify(process.execPath)} `);
  return {
    command: { file, args: [args[0]!, script, ...args.slice(2)], cwd: join(image.path, 'app') },
    env: { SERVICE: service },
  };
}

async function scrape(service: string, p: ServiceProcess) {
  const text = await (await fetch(`http://127.0.0.1:${p.httpPort}/metrics`)).text();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    // a counter's samples end in _total; histograms and summaries add their own series
    const names = [m[1]!];
    if (m[2] === 'histogram') names.push(...['_bucket', '_sum', '_count'].map((s) => m[1] + s));
    if (m[2] === 'summary') names.push(...['_sum', '_count'].map((s) => m[1] + s));
    for (const n of names) exported.set(n, (exported.get(n) ?? new Set()).add(service));
  }
  return text;
}

describe('the runtime image (deploy/Dockerfile, runtime stage)', () => {
  test('carries only production packages and the bundles', () => {
    const copies = runtimeCopies();
    assert.deepEqual(
      copies.map((c) => c.src),
      ['/app/node_modules', '/app/services/${SERVICE}/dist', '/app/packages/cli/dist'],
    );
    const app = join(image.path, 'app');
    assert.deepEqual(readdirSync(join(app, 'services')).sort(), [...services].sort());
    for (const s of services) assert.deepEqual(readdirSync(join(app, 'services', s)), ['dist']);
    assert.ok(!existsSync(join(app, 'node_modules', '.pnpm', 'node_modules', 'typescript')), 'no dev tools');
  });

  test(
    'each service starts from it with the image entrypoint, becomes ready and exports its metrics',
    { timeout: 240_000 },
    async () => {
      const ports = async (...names: string[]) =>
        Object.fromEntries(await Promise.all(names.map(async (n) => [n, String(await freePort())])));
      const secret = join(image.path, 'service-login');
      writeFileSync(secret, 'runtime-test-secret\n');
      // policy first: mta-inbound and msa are ready only with a policy service consuming
      const order = ['policy', ...services.filter((s) => s !== 'policy')];
      const extra: Record<string, Record<string, string>> = {
        policy: { POLICY_DELEGATION_ENABLED: 'no' },
        'mta-inbound': { POLICY_ENABLED: 'yes', ...(await ports('SMTP_PORT')) },
        msa: { POLICY_ENABLED: 'yes', ...(await ports('SUBMISSION_PORT', 'SUBMISSIONS_PORT')) },
        retrieval: await ports('IMAP_PORT', 'IMAPS_PORT', 'POP3_PORT', 'POP3S_PORT'),
        webmail: { ...(await ports('WEBMAIL_PORT')), SERVICE_LOGIN_PASSWORD_FILE: secret },
      };
      for (const service of order) {
        const { command, env } = entrypoint(service);
        const p = await bed.start(service, { ...env, ...extra[service] }, { command });
        const text = await scrape(service, p);
        assert.match(text, new RegExp(`^mailyard_build_info\\{service="${service}",`, 'm'), service);
        assert.match(text, new RegExp(`^process_resident_memory_bytes\\{service="${service}"\\} \\d+`, 'm'));
        assert.match(text, /^mailyard_readiness_check\{check="rabbitmq"\} 1$/m, service);
        // the other services' processes are not needed any more, except policy
        if (service !== 'policy' && service !== 'mta-inbound' && service !== 'msa') await p.stop();
      }
      for (const service of services)
        assert.ok(
          [...exported.values()].some((s) => s.has(service)),
          `${service} exported nothing`,
        );
    },
  );
});

const PROMQL_KEYWORDS =
  /^(and|or|unless|offset|bool|by|without|on|ignoring|group_left|group_right|inf|nan)$/i;

/**
 * Metric names in a PromQL expression: identifiers left once string literals, label
 * matchers, range and subquery brackets and grouping label lists are taken out, that are
 * neither functions (followed by `(`) nor keywords. `{__name__=~"..."}` selectors are
 * returned apart, as regular expressions.
 */
function metricNames(expr: string): { names: string[]; patterns: string[] } {
  const patterns = [...expr.matchAll(/__name__=~"([^"]+)"/g)].map((m) => m[1]!);
  const rest = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of rest.matchAll(/(?<![\w.$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()/g))
    if (!PROMQL_KEYWORDS.test(m[1]!)) names.add(m[1]!);
  return { names: [...names], patterns };
}

describe('dashboards and alerts name only exported metrics', () => {
  // Exported by RabbitMQ's Prometheus plugin and by Prometheus itself, not by our services.
  const external = (name: string) => /^rabbitmq_/.test(name) || name === 'up';

  test('every query of every Grafana panel', () => {
    const dir = 'deploy/grafana/dashboards';
    const files = readdirSync(join(root, dir)).filter((f) => f.endsWith('.json'));
    assert.ok(files.length > 0);
    let queries = 0;
    const used = new Set<string>();
    for (const f of files) {
      interface Panel {
        title: string;
        type: string;
        targets?: { expr: string }[];
        panels?: Panel[];
      }
      const dashboard = JSON.parse(read(join(dir, f))) as {
        panels: Panel[];
        templating?: { list: { name: string; query?: string | { query: string } }[] };
      };
      const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
      const exprs = panels.flatMap((p) =>
        (p.targets ?? []).map((t) => ({ where: `${f} / ${p.title}`, expr: t.expr })),
      );
      for (const v of dashboard.templating?.list ?? []) {
        const q = typeof v.query === 'string' ? v.query : v.query?.query;
        const inner = q && /^label_values\((.*),\s*\w+\)$/.exec(q)?.[1];
        if (inner) exprs.push({ where: `${f} / variable ${v.name}`, expr: inner });
      }
      for (const { where, expr } of exprs) {
        queries++;
        used.add(expr);
        // scaled services are told apart by the instance variable
        if (/\b(mailyard|process|nodejs)_/.test(expr) && !where.includes('variable'))
          assert.match(expr, /instance=~"\$instance"/, `${where}: no instance filter in ${expr}`);
        const { names, patterns } = metricNames(expr);
        assert.ok(names.length > 0 && patterns.length === 0, `${where}: no metric named in ${expr}`);
        for (const n of names)
          assert.ok(exported.has(n) || external(n), `${where}: ${n} is exported by no service`);
      }
    }
    assert.ok(queries >= 30, `${queries} queries`);
    // what an operator looks for first
    const all = [...used].join('\n');
    for (const needed of [
      /mailyard_mta_inbound_error_replies_total/,
      /mailyard_mta_inbound_policy_seconds_count\{outcome!="answered"/,
      /mailyard_outbound_relay_dsn_total/,
      /mailyard_delivery_bounces_total/,
      /mailyard_outbound_relay_attempts_total\{result!="delivered"/,
      /mailyard_mta_inbound_refused_connections_total/,
      /mailyard_retrieval_limit_rejections_total/,
      /sum by \(service, instance\) \(process_resident_memory_bytes/,
      /rabbitmq_detailed_queue_messages_ready/,
      /mailyard_readiness_check/,
    ])
      assert.match(all, needed);
  });

  test('every query is valid PromQL (promtool parses each as a recording rule)', { timeout: 60_000 }, () => {
    const dir = 'deploy/grafana/dashboards';
    const rules: { record: string; expr: string }[] = [];
    for (const f of readdirSync(join(root, dir)).filter((n) => n.endsWith('.json'))) {
      const dashboard = JSON.parse(read(join(dir, f))) as { panels: { targets?: { expr: string }[] }[] };
      for (const p of dashboard.panels)
        for (const t of p.targets ?? [])
          rules.push({
            record: `dashboard:query_${rules.length}`,
            // Grafana's variables, as it substitutes them
            expr: t.expr.replaceAll('$__rate_interval', '1m').replaceAll('$instance', '.*'),
          });
    }
    const file = join(image.path, 'dashboard-rules.yml');
    writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }));
    const res = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(res.status, 0, res.stdout + res.stderr);
  });

  test('every alert rule', () => {
    const rules = (
      parseYaml(read('deploy/prometheus/alerts.yml')) as {
        groups: { rules: { alert: string; expr: string }[] }[];
      }
    ).groups.flatMap((g) => g.rules);
    for (const r of rules) {
      const { names, patterns } = metricNames(r.expr);
      assert.ok(names.length + patterns.length > 0, `${r.alert}: no metric in ${r.expr}`);
      for (const n of names)
        assert.ok(exported.has(n) || external(n), `${r.alert}: ${n} is exported by no service`);
      for (const p of patterns) {
        const re = new RegExp(`^(?:${p})$`);
        assert.ok(
          [...exported.keys()].some((n) => re.test(n)),
          `${r.alert}: nothing exported matches ${p}`,
        );
      }
    }
  });
});
