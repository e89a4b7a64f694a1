import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Transactions, routesOf } from '../src/transaction.js';

test('a new envelope (RSET, EHLO, next message) starts a new transaction', { timeout: 5_000 }, () => {
  const txs = new Transactions();
  const session = { envelope: {} };
  const tx = txs.of(session);
  tx.rcptCommands = 2;
  tx.routes.set('bob@example.test', 'delivery');
  assert.equal(txs.of(session), tx, 'same envelope, same transaction');
  session.envelope = {};
  assert.deepEqual(txs.of(session), { rcptCommands: 0, routes: new Map() });
});

test('recipients are split by route in the order given, whatever their case', { timeout: 5_000 }, () => {
  const tx = new Transactions().of({ envelope: {} });
  tx.routes.set('bob@example.test', 'delivery');
  tx.routes.set('carol@remote.test', 'outbound');
  tx.routes.set('alice@example.test', 'delivery');
  assert.deepEqual(routesOf(tx, ['Alice@example.test', 'carol@remote.test', 'bob@example.test']), {
    delivery: ['Alice@example.test', 'bob@example.test'],
    outbound: ['carol@remote.test'],
  });
});

test('a recipient that never got a route is an error, not a guess', { timeout: 5_000 }, () => {
  const tx = new Transactions().of({ envelope: {} });
  tx.routes.set('bob@example.test', 'delivery');
  assert.throws(
    () => routesOf(tx, ['bob@example.test', 'eve@example.test']),
    /eve@example.test has no route/,
  );
});
