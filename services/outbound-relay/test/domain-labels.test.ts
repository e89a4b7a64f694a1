import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Registry } from '@mailyard/observability';
import { createMetrics } from '../src/metrics.js';
import { OTHER, TopDomains } from '../src/domain-labels.js';

test(
  'the domain label stays within the top N: thousands of one-off domains are "other", busy ones keep their name',
  { timeout: 10_000 },
  async () => {
    const registry = new Registry();
    const metrics = createMetrics(registry, async () => new Map());
    const top = new TopDomains(5, (domain) => {
      for (const result of ['delivered', 'deferred', 'bounced']) metrics.attempts.remove({ result, domain });
    });
    const busy = ['gmail.test', 'outlook.test', 'yahoo.test'];
    for (let i = 0; i < 3000; i++) {
      // a spam run to a new domain each time, with the usual traffic between
      metrics.attempts.inc({ result: 'bounced', domain: top.label(`d${i}.spam.test`) });
      if (i % 3 === 0)
        metrics.attempts.inc({ result: 'delivered', domain: top.label(busy[(i / 3) % busy.length]!) });
    }
    const values = (await registry.getSingleMetric('mailyard_outbound_relay_attempts_total')!.get()).values;
    const domains = new Set(values.map((v) => v.labels.domain as string));
    assert.ok(domains.size <= 5 + 1, `${domains.size} domain labels: ${[...domains].join(' ')}`);
    for (const d of busy) assert.ok(domains.has(d), `${d} keeps its label`);
    assert.ok(domains.has(OTHER));
    const other = values.find((v) => v.labels.domain === OTHER && v.labels.result === 'bounced');
    assert.ok(other && other.value > 2900, 'the one-off domains are counted as other');
    assert.equal(top.label('GMAIL.test'), 'gmail.test');
  },
);
