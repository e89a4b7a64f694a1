import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { startPrivateRedis, waitFor, type PrivateRedis } from '@mailyard/testkit';
import { Directory, DirectoryUnavailableError } from '../src/index.js';

// A service's directory over a Redis of the test's own that the test kills: every question
// that decides where mail goes or who may log in must fail, never answer "not local",
// "no such user" or "remote".
let server: PrivateRedis;
let admin: Redis;
let serviceRedis: Redis;
let dir: Directory;
const PASSWORD = 'correct horse battery staple';

before(async () => {
  server = await startPrivateRedis();
  admin = new Redis(server.port, '127.0.0.1');
  admin.on('error', () => undefined);
  const d = new Directory(admin);
  await d.addDomain('example.test');
  await d.addUser('alice@example.test', PASSWORD);
  await d.addAlias('team@example.test', ['alice@example.test', 'friend@remote.test']);
  // as the services' runtime: commands wait through a short reconnect, then fail
  serviceRedis = new Redis(server.port, '127.0.0.1', {
    maxRetriesPerRequest: 1,
    retryStrategy: () => 100,
  });
  serviceRedis.on('error', () => undefined);
  dir = new Directory(serviceRedis);
});
after(async () => {
  serviceRedis.disconnect();
  admin.disconnect();
  await server.close();
});

const unavailable = (err: unknown) => err instanceof DirectoryUnavailableError;

test(
  'with Redis unreachable every read fails with DirectoryUnavailableError',
  { timeout: 30_000 },
  async () => {
    assert.equal((await dir.lookup('alice@example.test')).match?.kind, 'account');
    await server.kill();
    try {
      await assert.rejects(dir.lookup('alice@example.test'), unavailable, 'lookup');
      await assert.rejects(dir.resolve('alice+tag@example.test'), unavailable, 'resolve');
      // not "remote": a failed lookup of a local address must never send it to outbound
      await assert.rejects(dir.expand('team@example.test'), unavailable, 'expand');
      await assert.rejects(dir.isLocalDomain('example.test'), unavailable, 'isLocalDomain');
      await assert.rejects(dir.accountExists('alice@example.test'), unavailable, 'accountExists');
      await assert.rejects(dir.accountRecord('alice@example.test'), unavailable, 'accountRecord');
      await assert.rejects(dir.checkPassword('alice@example.test', PASSWORD), unavailable, 'checkPassword');
      await assert.rejects(dir.addressesOf('alice@example.test'), unavailable, 'addressesOf');
    } finally {
      await server.start();
    }
    // and the same directory answers again once Redis is back
    await waitFor(async () => (await dir.lookup('alice@example.test')).match?.kind === 'account', {
      timeoutMs: 10_000,
      what: 'lookups answered again',
    });
    assert.deepEqual(await dir.expand('team@example.test'), {
      local: [{ account: 'alice@example.test', via: 'team@example.test' }],
      remote: ['friend@remote.test'],
    });
  },
);

test(
  'a failed command inside the lookup pipeline is an error, not "not local"',
  { timeout: 10_000 },
  async () => {
    // the domain set holding the wrong type makes SISMEMBER fail inside the pipeline
    // while the other commands succeed
    const bad = new Directory(admin);
    await admin.rename('domains', 'domains-set');
    await admin.set('domains', 'not a set');
    try {
      await assert.rejects(bad.lookup('alice@example.test'), unavailable);
    } finally {
      await admin.del('domains');
      await admin.rename('domains-set', 'domains');
    }
    assert.equal((await bad.lookup('alice@example.test')).match?.kind, 'account');
  },
);
