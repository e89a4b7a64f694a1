import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createResolver } from '@mailyard/dns';
import { createLogger } from '@mailyard/observability';
import { startDnsServer, type TestDnsServer } from '@mailyard/testkit';
import { dnsblLookup, dnsblName } from '../src/dns-checks.js';

// DNS list lookups against a real DNS server on loopback answering as Spamhaus does:
// a listing, nothing, or a refusal of the query (127.255.255.x), which is no listing.

const T = { timeout: 30_000 };
let dns: TestDnsServer;
const logLines: Record<string, unknown>[] = [];
const logger = createLogger('policy', 'warn', {
  write: (line: string) => void logLines.push(JSON.parse(line) as Record<string, unknown>),
});

before(async () => {
  dns = await startDnsServer({
    '2.0.0.127.zen.test': { A: ['127.0.0.2', '127.0.0.10'] },
    '254.2.0.192.zen.test': { A: ['127.255.255.254'] },
    '255.2.0.192.zen.test': { A: ['127.255.255.255'] },
    '1.2.0.192.zen.test': { A: ['10.0.0.1'] },
  });
});
after(() => dns.close());

const env = () => ({
  resolver: createResolver({ servers: [dns.address], timeoutMs: 1000, tries: 2, cache: false }),
  logger,
});
const lookup = (ip: string) => dnsblLookup(env(), 'zen.test', dnsblName(ip, 'zen.test')!);

test('a listing is its answers; an unlisted address is none', T, async () => {
  assert.deepEqual(await lookup('127.0.0.2'), { kind: 'found', value: ['127.0.0.2', '127.0.0.10'] });
  assert.deepEqual(await lookup('192.0.2.9'), { kind: 'none' });
  assert.deepEqual(logLines, []);
});

test(
  '127.255.255.x is the list refusing the query: a failed lookup, logged naming list and code',
  T,
  async () => {
    assert.deepEqual(await lookup('192.0.2.254'), {
      kind: 'temp',
      error: 'the list refused the query (127.255.255.254: query through a public or open resolver)',
      refused: true,
    });
    assert.deepEqual(await lookup('192.0.2.255'), {
      kind: 'temp',
      error: 'the list refused the query (127.255.255.255: too many queries)',
      refused: true,
    });
    assert.deepEqual(
      logLines.map((l) => [l.level, l.zone, l.answer]),
      [
        [40, 'zen.test', '127.255.255.254'],
        [40, 'zen.test', '127.255.255.255'],
      ],
    );
    assert.match(String(logLines[0]!.msg), /^DNS list zen\.test refused the query \(127\.255\.255\.254: /);
  },
);

test('an answer outside 127/8 is garbage, not a listing', T, async () => {
  const l = await lookup('192.0.2.1');
  assert.equal(l.kind, 'temp');
});
