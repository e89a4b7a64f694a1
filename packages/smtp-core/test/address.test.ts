import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { parseMailAddress, splitPlus } from '../src/index.js';

test('plain addresses parse with the domain lower-cased', () => {
  const r = parseMailAddress('Alice@Example.ORG');
  assert.ok(r.ok);
  assert.equal(r.value.address, 'Alice@example.org');
});

test('a quoted local part that needs no quotes is the dot-atom it holds', () => {
  for (const [raw, address] of [
    ['"user"@example.org', 'user@example.org'],
    ['"first.last"@example.org', 'first.last@example.org'],
    ['"a,b"@example.org', '"a,b"@example.org'],
    ['"a..b"@example.org', '"a..b"@example.org'],
    ['""@example.org', '""@example.org'],
  ] as const) {
    const r = parseMailAddress(raw);
    assert.ok(r.ok, raw);
    assert.equal(r.value.address, address);
  }
});

test('internationalised domains become their ASCII form', () => {
  const r = parseMailAddress('jörg@bücher.example');
  assert.ok(r.ok);
  assert.equal(r.value.domain, 'xn--bcher-kva.example');
});

for (const [addr, why] of [
  ['user%other.test@ourdomain.test', 'percent hack'],
  ['"user@other.test"@ourdomain.test', 'quoted @'],
  ['@ourdomain.test:user@other.test', 'source route'],
  ['other.test!user@ourdomain.test', 'bang path'],
  ['user@other.test@ourdomain.test', 'several @'],
] as const) {
  test(`relay trick refused: ${why}`, () => {
    const r = parseMailAddress(addr);
    assert.equal(r.ok, false);
    assert.equal(!r.ok && r.kind, 'relay_trick');
  });
}

for (const bad of [
  '',
  'no-at-sign',
  'a@',
  '@',
  'a b@example.org',
  'a@exa mple.org',
  'a@-bad-.org',
  'a..b@example.org',
  // RFC 5321 §4.1.3: an IPv6 literal carries its tag, an IPv4 one none
  'a@[::1]',
  'a@[IPv6:192.0.2.1]',
  'a@[192.0.2.256]',
]) {
  test(`syntax error: ${JSON.stringify(bad)}`, () => {
    const r = parseMailAddress(bad);
    assert.equal(r.ok, false);
  });
}

test('plus addresses split at the first delimiter', () => {
  assert.deepEqual(splitPlus('bob+news+x'), { base: 'bob', tag: 'news+x' });
  assert.deepEqual(splitPlus('+x'), { base: '+x', tag: null });
  assert.deepEqual(splitPlus('bob'), { base: 'bob', tag: null });
});

test('parser never throws and never accepts an address with two unquoted @', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 80 }), (s) => {
      const r = parseMailAddress(s);
      if (r.ok) assert.equal(r.value.address.split('@').length - 1 >= 1, true);
      if (r.ok && !s.trim().startsWith('"')) assert.equal(s.trim().split('@').length, 2);
    }),
    { numRuns: 2000 },
  );
});

test('address literals: IPv4 bare, IPv6 with its tag', { timeout: 5_000 }, () => {
  for (const [addr, domain] of [
    ['a@[192.0.2.1]', '[192.0.2.1]'],
    ['a@[IPv6:2001:db8::1]', '[IPv6:2001:db8::1]'],
    ['a@[ipv6:::1]', '[ipv6:::1]'],
  ] as const) {
    const r = parseMailAddress(addr);
    assert.ok(r.ok, addr);
    assert.equal(r.ok && r.value.domain, domain);
  }
});
