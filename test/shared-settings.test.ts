import assert from 'node:assert/strict';
import { test } from 'node:test';
import { addressingSchema, loadConfig, mailStoreSchema } from '@mailyard/config';
import { deliverySchema } from '@mailyard/service-delivery';
import { mtaInboundSchema } from '@mailyard/service-mta-inbound';
import { msaSchema } from '@mailyard/service-msa';
import { outboundRelaySchema } from '@mailyard/service-outbound-relay';
import { policySchema } from '@mailyard/service-policy';
import { retrievalSchema } from '@mailyard/service-retrieval';

// Settings two services must agree on come from one declaration: if mta-inbound split
// alice-x@ at "-" and delivery at "+", mail accepted for alice-x@ would not be delivered.
const schemas = {
  'mta-inbound': mtaInboundSchema,
  msa: msaSchema,
  delivery: deliverySchema,
  retrieval: retrievalSchema,
  'outbound-relay': outboundRelaySchema,
  policy: policySchema,
};
const shared = { ...addressingSchema, ...mailStoreSchema };
const needs: Record<keyof typeof shared, (keyof typeof schemas)[]> = {
  recipient_delimiter: ['mta-inbound', 'msa', 'delivery'],
  maildir_root: ['delivery', 'retrieval'],
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

test('one environment gives every service the same values', { timeout: 10_000 }, () => {
  const env = { RECIPIENT_DELIMITER: '-', MAILDIR_ROOT: '/srv/mail' };
  for (const [key, names] of Object.entries(needs)) {
    const values = names.map((n) => (loadConfig(schemas[n], { env }) as Record<string, unknown>)[key]);
    assert.deepEqual(new Set(values), new Set([key === 'recipient_delimiter' ? '-' : '/srv/mail']), key);
    const defaults = names.map((n) => (loadConfig(schemas[n], { env: {} }) as Record<string, unknown>)[key]);
    assert.equal(new Set(defaults).size, 1, `${key} has one default`);
  }
});
