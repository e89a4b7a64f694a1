// The alerting that ships with the deployment, checked by the tools of the images that
// run it: Prometheus's configuration and rules (promtool check), the rules' behaviour on
// made-up series (promtool test rules, deploy/prometheus/alerts.test.yml), and the
// Alertmanager's configuration (amtool). Debian's prometheus and prometheus-alertmanager
// packages provide the two tools (.ci/run installs them).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parse as parseYaml } from 'yaml';

const root = new URL('..', import.meta.url).pathname;
const prometheusDir = join(root, 'deploy', 'prometheus');

function run(cmd: string, args: string[], cwd: string) {
  const res = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 60_000 });
  assert.equal(res.error, undefined, `${cmd}: ${res.error?.message}`);
  return { status: res.status, out: res.stdout + res.stderr };
}

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const rules = (
  parseYaml(readFileSync(join(prometheusDir, 'alerts.yml'), 'utf8')) as {
    groups: { name: string; rules: Rule[] }[];
  }
).groups.flatMap((g) => g.rules);

describe('alert rules (deploy/prometheus/alerts.yml)', () => {
  test('prometheus.yml and the rules it loads are valid', { timeout: 60_000 }, () => {
    const res = run('promtool', ['check', 'config', 'prometheus.yml'], prometheusDir);
    assert.equal(res.status, 0, res.out);
    assert.match(res.out, /SUCCESS: \d+ rules found/);
    const prom = parseYaml(readFileSync(join(prometheusDir, 'prometheus.yml'), 'utf8')) as {
      rule_files: string[];
      alerting: { alertmanagers: { static_configs: { targets: string[] }[] }[] };
    };
    assert.deepEqual(prom.rule_files, ['alerts.yml']);
    assert.deepEqual(prom.alerting.alertmanagers[0]?.static_configs[0]?.targets, ['alertmanager:9093']);
  });

  test('fire on the series of their unit tests, and only then', { timeout: 120_000 }, () => {
    const res = run('promtool', ['test', 'rules', 'alerts.test.yml'], prometheusDir);
    assert.equal(res.status, 0, res.out);
    assert.match(res.out, /SUCCESS/);
  });

  test('each alert has a severity, a summary and a description, and a test that makes it fire', () => {
    const cases = parseYaml(readFileSync(join(prometheusDir, 'alerts.test.yml'), 'utf8')) as {
      tests: { alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[] }[];
    };
    const firing = new Set(
      cases.tests.flatMap((t) =>
        (t.alert_rule_test ?? []).filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname),
      ),
    );
    const alerts = rules.filter((r) => r.alert);
    assert.ok(alerts.length >= 15, `${alerts.length} alerts`);
    for (const r of alerts) {
      assert.match(r.labels?.severity ?? '', /^(page|warning)$/, `${r.alert}: severity`);
      assert.ok(r.annotations?.summary && r.annotations.description, `${r.alert}: summary and description`);
      assert.ok(firing.has(r.alert!), `${r.alert} has no unit test in which it fires`);
    }
  });

  test('cover what the administrator must hear about first', () => {
    const exprs = rules.map((r) => r.expr).join('\n');
    for (const needed of [
      /\bup\{job=~"[^"]*mta-inbound/, // a service down
      /mailyard_readiness_check/, // up but not ready
      /policy_seconds_count.*outcome=~"timeout/, // policy timing out
      /queue="dead-letter"/,
      /mailyard_outbound_relay_queue_depth_messages/,
      /result="deferred"/,
      /result="bounced"/,
      /mailyard_delivery_failures_total/,
      /rabbitmq_alarms_memory_used_watermark/,
      /rabbitmq_alarms_free_disk_space_watermark/,
      /tls_cert_expiry_seconds"\}\) < 14 \* 86400/,
      /dnsbl_listed/,
      /dns_check_ok/,
    ])
      assert.match(exprs, needed);
  });
});

describe('Alertmanager (deploy/alertmanager/alertmanager.yml)', () => {
  test('its configuration is valid, and mail goes through our own submission', { timeout: 60_000 }, () => {
    const dir = join(root, 'deploy', 'alertmanager');
    const res = run('amtool', ['check-config', 'alertmanager.yml'], dir);
    assert.equal(res.status, 0, res.out);
    const conf = parseYaml(readFileSync(join(dir, 'alertmanager.yml'), 'utf8')) as {
      global: Record<string, unknown>;
    };
    assert.equal(conf.global.smtp_smarthost, 'msa:587');
    assert.equal(conf.global.smtp_require_tls, true);
    // the password from the compose secret, never written in the file
    assert.equal(conf.global.smtp_auth_password, undefined);
    assert.equal(conf.global.smtp_auth_password_file, '/run/secrets/alertmanager-smtp-password');
  });
});
