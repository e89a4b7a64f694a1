import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { buildProxyV2, parseProxyHeader } from '../src/index.js';

test('v1 TCP4 and TCP6 headers', () => {
  const r = parseProxyHeader(Buffer.from('PROXY TCP4 192.0.2.1 198.51.100.2 5555 25\r\nEHLO x\r\n'));
  assert.equal(r.status, 'ok');
  assert.ok(
    r.status === 'ok' &&
      r.header.kind === 'proxy' &&
      r.header.sourceAddress === '192.0.2.1' &&
      r.header.sourcePort === 5555,
  );
  assert.equal(r.status === 'ok' && r.consumed, 43);
  const r6 = parseProxyHeader(Buffer.from('PROXY TCP6 2001:db8::1 2001:db8::2 1 25\r\n'));
  assert.ok(r6.status === 'ok' && r6.header.kind === 'proxy' && r6.header.sourceAddress === '2001:db8::1');
});

test('v1 with a mismatched or bogus address is invalid', () => {
  for (const h of [
    'PROXY TCP4 2001:db8::1 1.2.3.4 1 2\r\n',
    'PROXY TCP4 evil\r\n 1.2.3.4 1 2\r\n',
    'PROXY TCP4 1.2.3.4 1.2.3.4 99999 2\r\n',
    'PROXY FOO 1.2.3.4 1.2.3.4 1 2\r\n',
  ]) {
    assert.equal(parseProxyHeader(Buffer.from(h)).status, 'invalid', h);
  }
});

test('v2 round trip for IPv4 and IPv6, incomplete until the whole header is there', () => {
  for (const [src, dst] of [
    ['203.0.113.7', '192.0.2.25'],
    ['2001:db8::7', '2001:db8:1::25'],
  ] as const) {
    const h = buildProxyV2(src, 40000, dst, 25);
    for (let i = 1; i < h.length; i++)
      assert.equal(parseProxyHeader(h.subarray(0, i)).status, 'incomplete', `prefix ${i}`);
    const r = parseProxyHeader(Buffer.concat([h, Buffer.from('EHLO')]));
    assert.ok(r.status === 'ok' && r.header.kind === 'proxy');
    assert.equal(r.status === 'ok' && r.header.kind === 'proxy' && r.header.sourceAddress, src);
    assert.equal(r.status === 'ok' && r.consumed, h.length);
  }
});

test('v2 with an IPv4-mapped IPv6 address gives the IPv4 address', () => {
  const r = parseProxyHeader(buildProxyV2('::ffff:cb00:7107', 40000, '2001:db8::25', 25));
  assert.ok(r.status === 'ok' && r.header.kind === 'proxy');
  assert.equal(r.status === 'ok' && r.header.kind === 'proxy' && r.header.sourceAddress, '203.0.113.7');
  assert.equal(r.status === 'ok' && r.header.kind === 'proxy' && r.header.destAddress, '2001:db8::25');
});

test('the parser never throws on arbitrary bytes', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      const r = parseProxyHeader(Buffer.from(bytes));
      assert.ok(['incomplete', 'invalid', 'ok'].includes(r.status));
    }),
    { numRuns: 3000 },
  );
});
