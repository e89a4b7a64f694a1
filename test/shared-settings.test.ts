import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  addressingSchema,
  authservSchema,
  directoryCacheSchema,
  loadConfig,
  loginSchema,
  mailStoreSchema,
  messageSizeSchema,
  quotaSchema,
  queueLifetimeSchema,
  clientEndpointsSchema,
  relaySchema,
  sendingAddressSchema,
  tlsFilesSchema,
} from '@mailyard/config';
import { deliverySchema } from '@mailyard/service-delivery';
import { mtaInboundSchema } from '@mailyard/service-mta-inbound';
import { msaSchema } from '@mailyard/service-msa';
import { outboundRelaySchema } from '@mailyard/service-outbound-relay';
import { policySchema } from '@mailyard/service-policy';
import { retrievalSchema } from '@mailyard/service-retrieval';
import { webmailSchema } from '@mailyard/service-webmail';

// Settings two services must agree on come from one declaration: if mta-inbound split
// alice-x@ at "-" and delivery at "+", mail accepted for alice-x@ would not be delivered.
const schemas = {
  'mta-inbound': mtaInboundSchema,
  msa: msaSchema,
  delivery: deliverySchema,
  retrieval: retrievalSchema,
  'outbound-relay': outboundRelaySchema,
  policy: policySchema,
  webmail: webmailSchema,
};
type Service = keyof typeof schemas;
const shared = {
  ...addressingSchema,
  ...authservSchema,
  ...mailStoreSchema,
  ...quotaSchema,
  ...directoryCacheSchema,
  ...relaySchema,
  ...tlsFilesSchema,
  ...messageSizeSchema,
  ...loginSchema,
  ...sendingAddressSchema,
  ...clientEndpointsSchema,
  ...queueLifetimeSchema,
};
const needs: Record<keyof typeof shared, Service[]> = {
  recipient_delimiter: ['mta-inbound', 'msa', 'delivery', 'policy'],
  authserv_id: ['mta-inbound', 'msa', 'policy'],
  maildir_root: ['delivery', 'retrieval'],
  quota_storage: ['delivery', 'retrieval'],
  directory_cache_ttl: ['mta-inbound', 'delivery'],
  mynetworks: ['mta-inbound', 'policy'],
  relay_domains: ['mta-inbound', 'policy'],
  tls_cert_file: ['mta-inbound', 'msa', 'retrieval', 'webmail', 'policy'],
  tls_key_file: ['mta-inbound', 'msa', 'retrieval', 'webmail', 'policy'],
  tls_reload_interval: ['mta-inbound', 'msa', 'retrieval', 'webmail', 'policy'],
  acme_enabled: ['mta-inbound', 'msa', 'retrieval', 'webmail', 'policy'],
  message_size_limit: ['mta-inbound', 'msa', 'retrieval', 'webmail'],
  login_timeout: ['msa', 'retrieval'],
  smtp_bind_address: ['outbound-relay', 'policy', 'webmail'],
  smtp_bind_address6: ['outbound-relay', 'policy', 'webmail'],
  client_hostname: ['policy', 'webmail'],
  client_imap_port: ['policy', 'webmail'],
  client_imaps_port: ['policy', 'webmail'],
  client_pop3s_port: ['policy', 'webmail'],
  client_submission_port: ['policy', 'webmail'],
  client_submissions_port: ['policy', 'webmail'],
  maximal_queue_lifetime: ['outbound-relay', 'delivery'],
  delay_warning_time: ['outbound-relay', 'delivery'],
};
/** Keys two services declare apart on purpose, and why. */
const apart: Record<string, string> = {
  // port 25 exempts mynetworks by default, submission loopback (where a webmail submits from)
  smtpd_client_event_limit_exceptions: 'a default per role',
  // the relays parse it into delays; the webmail's queue page (as `mailyard queue`) only
  // needs the names of the delay queues it makes, so a wrong entry there cannot stop a relay
  outbound_retry_schedule: 'delays for the relay, queue names for the console',
};
const values: Record<keyof typeof shared, [string, unknown]> = {
  recipient_delimiter: ['-', '-'],
  authserv_id: ['mail.example.org', 'mail.example.org'],
  maildir_root: ['/srv/mail', '/srv/mail'],
  quota_storage: ['1G', 1024 ** 3],
  directory_cache_ttl: ['5s', 5000],
  mynetworks: ['192.0.2.0/24', ['192.0.2.0/24']],
  relay_domains: ['example.net', ['example.net']],
  tls_cert_file: ['/etc/mailyard/cert.pem', '/etc/mailyard/cert.pem'],
  tls_key_file: ['/etc/mailyard/key.pem', '/etc/mailyard/key.pem'],
  tls_reload_interval: ['5m', 300_000],
  acme_enabled: ['yes', true],
  message_size_limit: ['10M', 10 * 1024 ** 2],
  login_timeout: ['1m', 60_000],
  smtp_bind_address: ['192.0.2.25', '192.0.2.25'],
  smtp_bind_address6: ['2001:db8::25', '2001:db8::25'],
  client_hostname: ['imap.example.org', 'imap.example.org'],
  client_imap_port: ['1143', 1143],
  client_imaps_port: ['1993', 1993],
  client_pop3s_port: ['1995', 1995],
  client_submission_port: ['1587', 1587],
  client_submissions_port: ['1465', 1465],
  maximal_queue_lifetime: ['2d', 2 * 86_400_000],
  delay_warning_time: ['1h', 3_600_000],
};

test('every service that has a shared setting takes it from the one declaration', { timeout: 10_000 }, () => {
  for (const [key, field] of Object.entries(shared)) {
    const users = Object.entries(schemas).filter(([, s]) => key in s.shape);
    assert.deepEqual(
      users.map(([name]) => name).sort(),
      [...needs[key as keyof typeof shared]].sort(),
      `services with ${key}`,
    );
    for (const [name, s] of users)
      assert.equal(
        (s.shape as Record<string, unknown>)[key],
        field,
        `${name}.${key} is the shared declaration`,
      );
  }
});

test('no other key is declared by two services, unless on purpose', { timeout: 10_000 }, () => {
  const declarations = new Map<string, Set<unknown>>();
  for (const s of Object.values(schemas))
    for (const [key, field] of Object.entries(s.shape as Record<string, unknown>))
      declarations.set(key, (declarations.get(key) ?? new Set()).add(field));
  const twice = [...declarations].filter(([key, fields]) => fields.size > 1 && !(key in apart));
  assert.deepEqual(
    twice.map(([key]) => key),
    [],
    'declared apart: move the key to a fragment of packages/config/src/shared.ts',
  );
});

test('one environment gives every service the same values', { timeout: 10_000 }, () => {
  // what a service does not start without (the webmail's service login), besides
  const required = { SERVICE_LOGIN_PASSWORD: 'x'.repeat(16) };
  const env = {
    ...required,
    ...Object.fromEntries(Object.entries(values).map(([k, [text]]) => [k.toUpperCase(), text])),
  };
  for (const [key, names] of Object.entries(needs)) {
    for (const n of names) {
      const config = loadConfig(schemas[n], { env }) as Record<string, unknown>;
      assert.deepEqual(config[key], values[key as keyof typeof shared][1], `${n}.${key}`);
    }
    const defaults = names.map((n) =>
      JSON.stringify((loadConfig(schemas[n], { env: required }) as Record<string, unknown>)[key]),
    );
    assert.equal(new Set(defaults).size, 1, `${key} has one default`);
  }
});
