// `--check-config` says "valid" only of settings a service starts with: settings that must
// go together (a certificate and its key, ACME and the files it writes, the webmail and
// its service login) and a RELAYHOST in none of its forms are refused there, one line
// naming the key and exit 78, as a bad value is, not found only once the service starts;
// so are what only the machine can judge: a LISTEN_ADDRESS it cannot listen on, TLS files
// that do not load.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ConfigError, loadConfig, selfSignedCertificate } from '@mailyard/config';
import { mtaInboundSchema } from '@mailyard/service-mta-inbound';
import { msaSchema } from '@mailyard/service-msa';
import { outboundRelaySchema } from '@mailyard/service-outbound-relay';
import { policySchema } from '@mailyard/service-policy';
import { retrievalSchema } from '@mailyard/service-retrieval';
import { webmailSchema } from '@mailyard/service-webmail';
import { entryArgs, tempDir } from '@mailyard/testkit';

const root = new URL('..', import.meta.url).pathname;

function checkConfig(service: string, env: Record<string, string>) {
  const r = spawnSync(process.execPath, [...entryArgs(`services/${service}`), '--check-config'], {
    cwd: root,
    // only what the test sets: a developer's own settings must not change the outcome
    env: { PATH: process.env.PATH ?? '', ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout, lines: r.stderr.trim().split('\n').filter(Boolean) };
}

const secret = { SERVICE_LOGIN_PASSWORD: 'a-service-login-secret-of-32-chars' };

describe('--check-config refuses settings that do not go together', () => {
  for (const service of ['mta-inbound', 'msa', 'retrieval', 'webmail'])
    test(`${service}: a certificate without its key`, { timeout: 60_000 }, () => {
      const r = checkConfig(service, { ...secret, TLS_CERT_FILE: '/etc/mailyard/cert.pem' });
      assert.equal(r.status, 78, r.stdout + r.lines.join('\n'));
      assert.deepEqual(r.lines, [
        `${service}: config error: TLS_KEY_FILE: both TLS_CERT_FILE and TLS_KEY_FILE must be set`,
      ]);
    });

  test('webmail: ACME without the files it writes to', { timeout: 60_000 }, () => {
    const r = checkConfig('webmail', { ...secret, ACME_ENABLED: 'yes' });
    assert.equal(r.status, 78);
    assert.deepEqual(r.lines, [
      'webmail: config error: TLS_CERT_FILE: with ACME_ENABLED, TLS_CERT_FILE and TLS_KEY_FILE name where the ACME certificate is written',
    ]);
  });

  test('webmail: without its service login', { timeout: 60_000 }, () => {
    const r = checkConfig('webmail', {});
    assert.equal(r.status, 78);
    assert.deepEqual(r.lines, [
      'webmail: config error: SERVICE_LOGIN_PASSWORD: the webmail needs the service login secret that retrieval and msa accept (or SERVICE_LOGIN_PASSWORD_FILE)',
    ]);
  });

  test('webmail: the dns-01 challenge without its hook', { timeout: 60_000 }, () => {
    const r = checkConfig('webmail', {
      ...secret,
      ACME_ENABLED: 'yes',
      ACME_CHALLENGE: 'dns-01',
      TLS_CERT_FILE: '/etc/mailyard/cert.pem',
      TLS_KEY_FILE: '/etc/mailyard/key.pem',
    });
    assert.equal(r.status, 78);
    assert.deepEqual(r.lines, [
      'webmail: config error: ACME_DNS_HOOK: the dns-01 challenge needs a hook that publishes the TXT record',
    ]);
  });
});

describe('--check-config refuses a RELAYHOST in none of its forms', () => {
  for (const bad of ['smtp.example.com:submission', '[smtp.example.com]:99999', 'smtp example.com'])
    test(bad, { timeout: 60_000 }, () => {
      const r = checkConfig('outbound-relay', { RELAYHOST: bad });
      assert.equal(r.status, 78);
      assert.deepEqual(r.lines, [
        `outbound-relay: config error: RELAYHOST: expected host, host:port or [host]:port, got "${bad}"`,
      ]);
    });

  test('and takes each of them', { timeout: 60_000 }, () => {
    for (const good of [
      '[smtp.example.com]:587',
      '[192.0.2.25]',
      'smtp.example.com',
      'smtp.example.com:2525',
    ]) {
      const r = checkConfig('outbound-relay', { RELAYHOST: good });
      assert.equal(r.status, 0, `${good}: ${r.lines.join('\n')}`);
    }
  });
});

describe('--check-config refuses a wait longer than a timer can wait', () => {
  // a timer given more than 2^31-1 ms (about 24.8 days) fires at once: IMAP_AUTOLOGOUT=30d
  // logged every client out as soon as it connected
  test('retrieval: IMAP_AUTOLOGOUT of 30 days', { timeout: 60_000 }, () => {
    const r = checkConfig('retrieval', { IMAP_AUTOLOGOUT: '30d' });
    assert.equal(r.status, 78);
    assert.deepEqual(r.lines, [
      'retrieval: config error: IMAP_AUTOLOGOUT: expected a duration up to 24d, got "30d"',
    ]);
  });

  const timers: [Parameters<typeof loadConfig>[0], string[]][] = [
    [mtaInboundSchema, ['smtpd_timeout', 'policy_timeout', 'policy_data_timeout', 'postscreen_greet_wait']],
    [mtaInboundSchema, ['redis_command_timeout', 'shutdown_grace', 'tls_reload_interval']],
    [msaSchema, ['login_timeout']],
    [retrievalSchema, ['imap_autologout', 'pop3_autologout', 'imap_idle_notify_delay', 'login_idle_timeout']],
    [policySchema, ['dns_check_interval', 'content_filter_timeout']],
    [
      outboundRelaySchema,
      [
        'smtp_connect_timeout',
        'smtp_reply_timeout',
        'smtp_connection_cache_time_limit',
        'smtp_connection_reuse_time_limit',
        'destination_slot_wait',
      ],
    ],
    [webmailSchema, ['imap_idle_timeout', 'imap_timeout', 'send_timeout', 'acme_check_interval']],
    [webmailSchema, ['client_header_timeout', 'client_body_timeout', 'keepalive_timeout']],
  ];
  test('every timeout and interval, in every service', () => {
    for (const [schema, keys] of timers)
      for (const key of keys) {
        const env = { ...secret, [key.toUpperCase()]: '25d' };
        assert.throws(
          () => loadConfig(schema, { env }),
          (e: unknown) =>
            e instanceof ConfigError &&
            e.problems.join('\n') === `${key.toUpperCase()}: expected a duration up to 24d, got "25d"`,
          key,
        );
        const config: Record<string, unknown> = loadConfig(schema, {
          env: { ...env, [key.toUpperCase()]: '24d' },
        });
        assert.equal(config[key], 24 * 86_400_000, key);
      }
  });
});

describe('--check-config refuses a MYHOSTNAME that is not a host name', () => {
  // it is the greeting, the EHLO name every other server judges us by, and the right side
  // of our Message-IDs: "mail example.com" would be "EHLO mail example.com", refused
  for (const bad of ['mail example.com', 'mail.example.com:25', 'mail..example.com', '-mail.example.com'])
    test(bad, { timeout: 60_000 }, () => {
      const r = checkConfig('outbound-relay', { MYHOSTNAME: bad });
      assert.equal(r.status, 78);
      assert.deepEqual(r.lines, [
        `outbound-relay: config error: MYHOSTNAME: expected a host name such as mail.example.org, got "${bad}"`,
      ]);
    });

  test('and takes a host name', () => {
    for (const good of [
      'mail.example.org',
      'mx1.example.org.',
      'vm',
      'mail-2.example.org',
      'MAIL.Example.ORG',
    ])
      assert.equal(loadConfig(mtaInboundSchema, { env: { MYHOSTNAME: good } }).myhostname, good);
  });
});

describe('--check-config refuses a Redis command timeout of 0', () => {
  // ioredis takes 0 as "no timeout": a Redis that accepts connections and never answers
  // would hold every login, lookup and decision that asks it, for ever
  test('REDIS_COMMAND_TIMEOUT=0', { timeout: 60_000 }, () => {
    const r = checkConfig('delivery', { REDIS_COMMAND_TIMEOUT: '0' });
    assert.equal(r.status, 78);
    assert.deepEqual(r.lines, [
      'delivery: config error: REDIS_COMMAND_TIMEOUT: expected a duration above 0, such as 30s or 3m, got "0"',
    ]);
  });
});

describe('--check-config refuses a LISTEN_ADDRESS the service cannot listen on', () => {
  // each used to pass here and stop the service at its first listen, with a stack trace
  const cases: [string, string][] = [
    ['nowhere.invalid', 'LISTEN_ADDRESS: nowhere.invalid does not resolve to an address'],
    ['192.0.2.1', 'LISTEN_ADDRESS: cannot listen on 192.0.2.1: EADDRNOTAVAIL'],
    [
      '127.0.0.1:25',
      'LISTEN_ADDRESS: expected an IP address such as 0.0.0.0 or ::, or a host name, got "127.0.0.1:25"',
    ],
  ];
  for (const [bad, problem] of cases)
    test(bad, { timeout: 60_000 }, () => {
      const r = checkConfig('policy', { LISTEN_ADDRESS: bad });
      assert.equal(r.status, 78, r.stdout);
      assert.deepEqual(r.lines, [`policy: config error: ${problem}`]);
    });

  test('a name the resolver cannot answer for now is not called invalid', { timeout: 60_000 }, () => {
    // a DNS server down (EAI_AGAIN), made certain by a resolver that fails for this name:
    // exit 78 would tell a supervisor the setting is wrong and stop the service for good
    const tmp = tempDir();
    try {
      const dnsDown = join(tmp.path, 'dns-down.mjs');
      writeFileSync(
        dnsDown,
        `import dns from 'node:dns';
        const lookup = dns.lookup;
        dns.lookup = (host, ...rest) => {
          if (host !== 'mail.dns-down.test') return lookup(host, ...rest);
          const err = Object.assign(new Error('getaddrinfo EAI_AGAIN ' + host), { code: 'EAI_AGAIN' });
          process.nextTick(rest.at(-1), err);
        };`,
      );
      const r = checkConfig('policy', {
        LISTEN_ADDRESS: 'mail.dns-down.test',
        NODE_OPTIONS: `--import=${dnsDown}`,
      });
      assert.equal(r.status, 75, r.lines.join('\n'));
      assert.deepEqual(r.lines, [
        'policy: cannot check now: LISTEN_ADDRESS: mail.dns-down.test could not be resolved now (a temporary DNS failure)',
      ]);
    } finally {
      tmp.cleanup();
    }
  });

  test('and takes an address or a name of this machine', { timeout: 120_000 }, () => {
    for (const good of ['127.0.0.1', '::', 'localhost']) {
      const r = checkConfig('policy', { LISTEN_ADDRESS: good });
      assert.equal(r.status, 0, `${good}: ${r.lines.join('\n')}`);
    }
  });
});

describe('--check-config reads the certificate and its key', () => {
  // the files were read only when the service started: a wrong file passed the check
  const tmp = tempDir();
  after(() => tmp.cleanup());
  const one = selfSignedCertificate('mx.check-config.test');
  const other = selfSignedCertificate('mx.check-config.test');
  const file = (name: string, text: string) => {
    const path = join(tmp.path, name);
    writeFileSync(path, text);
    return path;
  };
  const cert = file('cert.pem', one.cert);
  const key = file('key.pem', one.key);
  const otherKey = file('other-key.pem', other.key);
  const notPem = file('not-pem.pem', 'not a certificate\n');

  test('a key that is not the certificate’s', { timeout: 60_000 }, () => {
    const r = checkConfig('msa', { ...secret, TLS_CERT_FILE: cert, TLS_KEY_FILE: otherKey });
    assert.equal(r.status, 78, r.stdout);
    assert.deepEqual(r.lines, [
      `msa: config error: TLS_KEY_FILE: the key in ${otherKey} is not the key of the certificate in ${cert}`,
    ]);
  });

  test('files that are not PEM, and one that cannot be read, all at once', { timeout: 60_000 }, () => {
    const r = checkConfig('mta-inbound', { TLS_CERT_FILE: notPem, TLS_KEY_FILE: '/nonexistent/key.pem' });
    assert.equal(r.status, 78, r.stdout);
    assert.deepEqual(r.lines, [
      `mta-inbound: config error: TLS_KEY_FILE: cannot read /nonexistent/key.pem: ENOENT`,
      `mta-inbound: config error: TLS_CERT_FILE: ${notPem} holds no PEM certificate`,
    ]);
    const k = checkConfig('retrieval', { ...secret, TLS_CERT_FILE: cert, TLS_KEY_FILE: notPem });
    assert.equal(k.status, 78, k.stdout);
    assert.deepEqual(k.lines, [
      `retrieval: config error: TLS_KEY_FILE: ${notPem} holds no PEM private key (or one with a passphrase)`,
    ]);
  });

  test('and takes a pair that goes together', { timeout: 60_000 }, () => {
    const r = checkConfig('webmail', { ...secret, TLS_CERT_FILE: cert, TLS_KEY_FILE: key });
    assert.equal(r.status, 0, r.lines.join('\n'));
  });
});

describe('--check-config refuses a sending address that is not one', () => {
  // outbound-relay binds each connection to it: a name or the wrong family was taken here
  // and failed every delivery attempt
  const cases: [string, string, string][] = [
    ['SMTP_BIND_ADDRESS', 'mail.example.org', 'expected an IPv4 address such as 192.0.2.25, or nothing'],
    ['SMTP_BIND_ADDRESS', '2001:db8::25', 'expected an IPv4 address such as 192.0.2.25, or nothing'],
    ['SMTP_BIND_ADDRESS6', '192.0.2.25', 'expected an IPv6 address such as 2001:db8::25, or nothing'],
  ];
  test('a name, or an address of the other family', () => {
    for (const [key, bad, problem] of cases)
      assert.throws(
        () => loadConfig(outboundRelaySchema, { env: { [key]: bad } }),
        (e: unknown) =>
          e instanceof ConfigError && e.problems.join('\n') === `${key}: ${problem}, got "${bad}"`,
        `${key}=${bad}`,
      );
  });

  test('and takes an address of each family', () => {
    const c = loadConfig(outboundRelaySchema, {
      env: { SMTP_BIND_ADDRESS: '192.0.2.25', SMTP_BIND_ADDRESS6: '2001:db8::25' },
    });
    assert.deepEqual([c.smtp_bind_address, c.smtp_bind_address6], ['192.0.2.25', '2001:db8::25']);
  });
});
