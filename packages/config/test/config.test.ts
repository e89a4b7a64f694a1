import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { z } from 'zod';
import { entryArgs } from '../../../scripts/bundle-current.mjs';
import {
  ConfigError,
  bytes,
  bytesOrUnlimited,
  commonSchema,
  cidrList,
  duration,
  ipInNetworks,
  loadConfig,
  loadConfigAsync,
  port,
} from '../src/index.js';

const schema = z.object({
  smtp_port: port(25),
  message_size_limit: bytes(1024),
  mynetworks: cidrList(['127.0.0.0/8']),
  smtpd_timeout: duration('300s'),
});
const tempDir = () => {
  const path = mkdtempSync(join(tmpdir(), 'mailyard-config-'));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
};
const root = new URL('../../..', import.meta.url).pathname;

test('defaults, environment and file: environment wins over the file', () => {
  const t = tempDir();
  const file = join(t.path, 'mailyard.yml');
  writeFileSync(file, 'smtp_port: 2525\nmessage_size_limit: 10M\nmynetworks: [10.0.0.0/8, "::1"]\n');
  const c = loadConfig(schema, { env: { SMTP_PORT: '2626' }, file });
  assert.equal(c.smtp_port, 2626);
  assert.equal(c.message_size_limit, 10 * 1024 * 1024);
  assert.deepEqual(c.mynetworks, ['10.0.0.0/8', '::1']);
  assert.equal(c.smtpd_timeout, 300_000);
  t.cleanup();
});

test('loadConfigAsync reads as loadConfig does, with the same errors', async (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const file = join(dir.path, 'mailyard.yml');
  const both = async (opts: Parameters<typeof loadConfig>[1]) => {
    const settle = <T>(f: () => T) => {
      try {
        return { value: f() };
      } catch (err) {
        return { error: err instanceof ConfigError ? err.problems : err };
      }
    };
    const sync = settle(() => loadConfig(schema, opts));
    const lazy = await loadConfigAsync(schema, opts).then(
      (value) => ({ value }),
      (err: unknown) => ({ error: err instanceof ConfigError ? err.problems : err }),
    );
    assert.deepEqual(lazy, sync);
    return sync;
  };
  writeFileSync(file, 'smtp_port: 2525\nmessage_size_limit: 10M\n');
  assert.equal((await both({ env: { MYNETWORKS: '10.0.0.0/8' }, file })).value?.smtp_port, 2525);
  assert.equal((await both({ env: { MAILYARD_CONFIG: file } })).value?.message_size_limit, 10 * 1024 * 1024);
  assert.equal((await both({ env: {} })).value?.smtp_port, 25);
  writeFileSync(file, 'smtp_port: [2525\n');
  assert.match(String((await both({ env: {}, file })).error), /is not valid YAML/);
  writeFileSync(file, 'smtp_prot: 25\n');
  assert.match(String((await both({ env: {}, file })).error), /smtp_prot: unknown key/);
  assert.match(
    String((await both({ env: {}, file: join(dir.path, 'none.yml') })).error),
    /cannot read .*ENOENT/,
  );
});

test('every bad value is reported at once, each naming its key', () => {
  try {
    loadConfig(schema, { env: { SMTP_PORT: 'abc', MYNETWORKS: '10.0.0.0/33', SMTPD_TIMEOUT: 'soon' } });
    assert.fail('expected a ConfigError');
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.problems.length, 3);
    assert.match(
      err.problems.find((p) => p.startsWith('SMTP_PORT'))!,
      /^SMTP_PORT: expected a port number.*got "abc"/,
    );
    assert.ok(err.problems.some((p) => p.startsWith('MYNETWORKS: expected IP networks')));
    assert.ok(err.problems.some((p) => p.startsWith('SMTPD_TIMEOUT: expected a duration')));
  }
});

test('an unknown key in the file is an error naming it', () => {
  const t = tempDir();
  const file = join(t.path, 'c.yml');
  writeFileSync(file, 'smtp_prot: 25\n');
  assert.throws(() => loadConfig(schema, { env: {}, file }), /smtp_prot: unknown key/);
  t.cleanup();
});

test('network matching: IPv4, IPv6 and IPv4-mapped IPv6', () => {
  assert.equal(ipInNetworks('127.0.0.5', ['127.0.0.0/8']), true);
  assert.equal(ipInNetworks('::ffff:127.0.0.5', ['127.0.0.0/8']), true);
  assert.equal(ipInNetworks('172.17.0.2', ['127.0.0.0/8', '::1/128']), false);
  assert.equal(ipInNetworks('2001:db8::5', ['2001:db8::/32']), true);
  assert.equal(ipInNetworks('2001:db9::5', ['2001:db8::/32']), false);
});

test('a service with a bad setting exits 78 with one line naming the key', () => {
  const r = spawnSync(process.execPath, entryArgs('services/mta-inbound'), {
    cwd: root,
    env: { ...process.env, SMTP_PORT: 'abc', MESSAGE_SIZE_LIMIT: 'huge' },
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(r.status, 78);
  const lines = r.stderr.trim().split('\n');
  assert.deepEqual(
    lines.map((l) => l.split(':').slice(0, 3).join(':')),
    ['mta-inbound: config error: SMTP_PORT', 'mta-inbound: config error: MESSAGE_SIZE_LIMIT'],
  );
});

test('--check-config validates and exits 0 without starting anything', () => {
  const r = spawnSync(process.execPath, [...entryArgs('services/delivery'), '--check-config'], {
    cwd: root,
    env: { ...process.env, MAILDIR_ROOT: '/tmp/x' },
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /delivery: configuration is valid/);
});

test(
  'DNS servers are IP addresses with an optional port; a name or a second port names the key',
  { timeout: 10_000 },
  () => {
    const s = z.object({ dns_servers: commonSchema.dns_servers });
    assert.deepEqual(
      loadConfig(s, { env: { DNS_SERVERS: '127.0.0.1, 192.0.2.53:5353 ::1 [::1]:53' } }).dns_servers,
      ['127.0.0.1', '192.0.2.53:5353', '::1', '[::1]:53'],
    );
    for (const bad of ['localhost:53', '1.1.1.1:53:53', '1.1.1.1:0', '[resolver]:53'])
      assert.throws(
        () => loadConfig(s, { env: { DNS_SERVERS: bad } }),
        (e: unknown) =>
          e instanceof ConfigError && /^DNS_SERVERS: expected IP addresses/.test(e.problems[0]!),
        bad,
      );
  },
);

test(
  'a number is digits: blank, true or 0x19 is an error naming the key, not 0, 1 or 25',
  { timeout: 10_000 },
  () => {
    const s = z.object({ smtp_port: port(25), dns_cache_size: commonSchema.dns_cache_size });
    assert.equal(loadConfig(s, { env: { SMTP_PORT: ' 2525 ', DNS_CACHE_SIZE: '0' } }).smtp_port, 2525);
    for (const bad of [' ', '0x19', '1e3', 'true']) {
      assert.throws(
        () => loadConfig(s, { env: { SMTP_PORT: bad } }),
        (e: unknown) => e instanceof ConfigError && /^SMTP_PORT: expected a port number/.test(e.problems[0]!),
        JSON.stringify(bad),
      );
    }
    const t = tempDir();
    const file = join(t.path, 'c.yml');
    // a key written with no value, or a YAML boolean
    writeFileSync(file, 'smtp_port:\ndns_cache_size: true\n');
    assert.throws(
      () => loadConfig(s, { env: {}, file }),
      (e: unknown) =>
        e instanceof ConfigError &&
        e.problems.length === 2 &&
        e.problems.some((p) => p.startsWith('smtp_port (in ')) &&
        e.problems.some((p) => p.startsWith('dns_cache_size (in ')),
    );
    t.cleanup();
  },
);

test('a shutdown grace of 0 is refused naming the key', { timeout: 10_000 }, () => {
  const s = z.object({ shutdown_grace: commonSchema.shutdown_grace });
  assert.equal(loadConfig(s, { env: { SHUTDOWN_GRACE: '250ms' } }).shutdown_grace, 250);
  assert.throws(
    () => loadConfig(s, { env: { SHUTDOWN_GRACE: '0' } }),
    (e: unknown) =>
      e instanceof ConfigError && /^SHUTDOWN_GRACE: expected a duration above 0/.test(e.problems[0]!),
  );
});

test('a tool reading a shared file may ignore the keys of other services', () => {
  const t = tempDir();
  const file = join(t.path, 'shared.yml');
  writeFileSync(file, 'smtp_port: 2525\nmaildir_root: /srv/mail\n');
  assert.equal(loadConfig(schema, { env: {}, file, ignoreUnknownFileKeys: true }).smtp_port, 2525);
  t.cleanup();
});

test('a quota of 0 means no limit; a message size limit of 0 is refused naming the key', () => {
  const s = z.object({ quota_storage: bytesOrUnlimited(0), message_size_limit: bytes(1024) });
  assert.equal(loadConfig(s, { env: { QUOTA_STORAGE: '0' } }).quota_storage, 0);
  assert.equal(loadConfig(s, { env: { QUOTA_STORAGE: '2G' } }).quota_storage, 2 * 1024 ** 3);
  assert.throws(
    () => loadConfig(s, { env: { QUOTA_STORAGE: '-1' } }),
    (e: unknown) => e instanceof ConfigError && /quota_storage/i.test(e.message),
  );
  assert.throws(
    () => loadConfig(s, { env: { MESSAGE_SIZE_LIMIT: '0' } }),
    (e: unknown) => e instanceof ConfigError && /message_size_limit.*above 0/i.test(e.message),
  );
});

test('passwords from files go into the connection URLs; an unreadable file is an error naming its key', () => {
  const dir = tempDir();
  try {
    const urls = z.object({
      amqp_url: commonSchema.amqp_url,
      amqp_password_file: commonSchema.amqp_password_file,
      redis_url: commonSchema.redis_url,
      redis_password_file: commonSchema.redis_password_file,
    });
    writeFileSync(join(dir.path, 'amqp'), 'p@ss/w:rd\n');
    writeFileSync(join(dir.path, 'redis'), 's3cret');
    const config = loadConfig(urls, {
      env: {
        AMQP_URL: 'amqp://mailyard@rabbitmq:5672',
        AMQP_PASSWORD_FILE: join(dir.path, 'amqp'),
        REDIS_URL: 'redis://redis:6379',
        REDIS_PASSWORD_FILE: join(dir.path, 'redis'),
      },
    });
    assert.equal(config.amqp_url, 'amqp://mailyard:p%40ss%2Fw%3Ard@rabbitmq:5672');
    assert.equal(decodeURIComponent(new URL(config.amqp_url).password), 'p@ss/w:rd');
    assert.equal(config.redis_url, 'redis://:s3cret@redis:6379');
    // without the files, the URLs as given
    assert.equal(
      loadConfig(urls, { env: { REDIS_URL: 'redis://redis:6379' } }).redis_url,
      'redis://redis:6379',
    );
    assert.throws(
      () => loadConfig(urls, { env: { REDIS_PASSWORD_FILE: join(dir.path, 'missing') } }),
      (err: ConfigError) => /^REDIS_PASSWORD_FILE: cannot read .*missing: ENOENT$/.test(err.problems[0]!),
    );
    writeFileSync(join(dir.path, 'empty'), '\n');
    assert.throws(
      () => loadConfig(urls, { env: { AMQP_PASSWORD_FILE: join(dir.path, 'empty') } }),
      (err: ConfigError) => /^AMQP_PASSWORD_FILE: .*empty is empty$/.test(err.problems[0]!),
    );
  } finally {
    dir.cleanup();
  }
});

test('spaces around a setting are not part of it, except in a password; INFO is info', () => {
  const s = z.object({
    ...commonSchema,
    rspamd_url: z.url(),
    relayhost_password: z.string().default(''),
  });
  const c = loadConfig(s, {
    env: {
      MYHOSTNAME: ' mx.example.org ',
      RSPAMD_URL: 'http://127.0.0.1:11333 ',
      RELAYHOST_PASSWORD: ' secret ',
      LOG_LEVEL: 'INFO',
    },
  });
  assert.equal(c.myhostname, 'mx.example.org');
  assert.equal(c.rspamd_url, 'http://127.0.0.1:11333');
  assert.equal(c.relayhost_password, ' secret ');
  assert.equal(c.log_level, 'info');
});
