// freePort's ports are told to services started later: two of them given the same port
// would fail with EADDRINUSE, a flaky test that no rerun explains.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { freePort } from '../src/index.js';

test('freePort never gives one process the same port twice', { timeout: 60_000 }, async () => {
  // drawn at random from about 22,000 ports, 2,000 draws would repeat one about 90 times
  const ports: number[] = [];
  for (let i = 0; i < 2000; i++) ports.push(await freePort());
  assert.equal(new Set(ports).size, ports.length);
});
