import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_ENVELOPE_RECIPIENT_BYTES } from '@mailyard/bus';
import { Transactions, addRoute, envelopeHasRoom, routesOf } from '../src/transaction.js';

test('a new envelope (RSET, EHLO, next message) starts a new transaction', { timeout: 5_000 }, () => {
  const txs = new Transactions();
  const session = { envelope: {} };
  const tx = txs.of(session);
  tx.rcptCommands = 2;
  addRoute(tx, 'bob@example.test', 'delivery');
  assert.equal(txs.of(session), tx, 'same envelope, same transaction');
  session.envelope = {};
  assert.deepEqual(txs.of(session), {
    rcptCommands: 0,
    routes: new Map(),
    routeBytes: { delivery: 0, outbound: 0 },
  });
});

test('recipients are split by route in the order given, whatever their case', { timeout: 5_000 }, () => {
  const tx = new Transactions().of({ envelope: {} });
  addRoute(tx, 'bob@example.test', 'delivery');
  addRoute(tx, 'carol@remote.test', 'outbound');
  addRoute(tx, 'alice@example.test', 'delivery');
  assert.deepEqual(routesOf(tx, ['Alice@example.test', 'carol@remote.test', 'bob@example.test']), {
    delivery: ['Alice@example.test', 'bob@example.test'],
    outbound: ['carol@remote.test'],
  });
});

test('a recipient that never got a route is an error, not a guess', { timeout: 5_000 }, () => {
  const tx = new Transactions().of({ envelope: {} });
  addRoute(tx, 'bob@example.test', 'delivery');
  assert.throws(
    () => routesOf(tx, ['bob@example.test', 'eve@example.test']),
    /eve@example.test has no route/,
  );
});

test(
  'the envelope takes recipients up to its room; local and remote ones count twice, local ones filed twice',
  { timeout: 5_000 },
  () => {
    // each address as a JSON string and its comma: 64 bytes
    const address = (i: number, domain: string) => `${String(i).padStart(60 - domain.length, 'r')}@${domain}`;
    const fill = (routeOf: (i: number) => 'delivery' | 'outbound', filing = false) => {
      const tx = new Transactions().of({ envelope: {} });
      let i = 0;
      for (; envelopeHasRoom(tx, address(i, 'x.test'), routeOf(i), { filing }); i++)
        addRoute(tx, address(i, 'x.test'), routeOf(i));
      return { tx, taken: i };
    };
    const remote = fill(() => 'outbound');
    assert.equal(remote.taken, MAX_ENVELOPE_RECIPIENT_BYTES / 64);
    // one taken already still fits; its case is the same recipient
    assert.equal(
      envelopeHasRoom(remote.tx, address(0, 'x.test').toUpperCase(), 'outbound', { filing: false }),
      true,
    );
    const mixed = fill((i) => (i % 2 ? 'delivery' : 'outbound'));
    assert.equal(mixed.taken, MAX_ENVELOPE_RECIPIENT_BYTES / 128);
    // a policy verdict may list every local one again for Junk; remote ones are not filed
    assert.equal(fill(() => 'outbound', true).taken, MAX_ENVELOPE_RECIPIENT_BYTES / 64);
    assert.equal(fill(() => 'delivery', true).taken, MAX_ENVELOPE_RECIPIENT_BYTES / 128);
    assert.equal(
      fill((i) => (i % 2 ? 'delivery' : 'outbound'), true).taken,
      Math.floor(MAX_ENVELOPE_RECIPIENT_BYTES / 160),
    );
  },
);
