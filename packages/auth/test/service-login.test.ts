import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Directory } from '@mailyard/directory';
import { createTestRedis, type TestRedis } from '@mailyard/testkit';
import {
  AppPasswords,
  DEFAULT_LOCKOUT,
  LoginGuard,
  createAuthenticator,
  createServiceAuthorizer,
  logIn,
  serviceLoginFromConfig,
} from '../src/index.js';

const SECRET = 'a-random-service-secret-of-some-length';
let r: TestRedis;
let dir: Directory;
before(async () => {
  r = createTestRedis();
  dir = new Directory(r.redis);
  await dir.addDomain('example.test');
  await dir.addUser('alice@example.test', 'correct horse battery staple');
  await dir.addUser('bob@example.test', 'correct horse battery staple');
});
after(() => r.cleanup());

const policy = {
  ...DEFAULT_LOCKOUT,
  accountIpThreshold: 3,
  ipThreshold: 100,
  windowSeconds: 60,
  baseLockSeconds: 30,
  maxLockSeconds: 60,
};

test('acts for an existing account only, with the secret, from its networks', async () => {
  const guard = new LoginGuard(r.redis, policy);
  const svc = createServiceAuthorizer({
    directory: dir,
    guard,
    login: { name: 'webmail', password: SECRET, networks: ['192.0.2.0/24'] },
  });
  const req = { ip: '192.0.2.7', service: 'webmail', password: SECRET, user: 'Alice@example.test' };
  assert.deepEqual(await svc.authorizeAs(req), {
    ok: true,
    account: 'alice@example.test',
    service: 'webmail',
    credential: { signOut: '0' },
  });
  assert.deepEqual(await svc.authorizeAs({ ...req, user: 'nobody@example.test' }), {
    ok: false,
    reason: 'invalid',
  });
  assert.deepEqual(await svc.authorizeAs({ ...req, service: 'alice@example.test' }), {
    ok: false,
    reason: 'invalid',
  });
  assert.deepEqual(await svc.authorizeAs({ ...req, ip: '198.51.100.1' }), { ok: false, reason: 'invalid' });
  // nor for a locked account, until it is unlocked
  await dir.setLocked('alice@example.test', true);
  assert.deepEqual(await svc.authorizeAs(req), { ok: false, reason: 'invalid' });
  await dir.setLocked('alice@example.test', false);
  assert.equal((await svc.authorizeAs(req)).ok, true);
});

test('guessing the secret locks the service out at that address; outsiders cannot lock it', async () => {
  const guard = new LoginGuard(r.redis, policy);
  const svc = createServiceAuthorizer({
    directory: dir,
    guard,
    login: { name: 'svc2', password: SECRET, networks: ['192.0.2.0/24'] },
  });
  // failures from outside the networks count against the address named, not the service
  for (let i = 0; i < 5; i++) {
    await svc.authorizeAs({
      ip: '198.51.100.1',
      service: 'svc2',
      password: 'wrong',
      user: 'bob@example.test',
    });
  }
  const ok = { ip: '192.0.2.8', service: 'svc2', password: SECRET, user: 'alice@example.test' };
  assert.equal((await svc.authorizeAs(ok)).ok, true);
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(await svc.authorizeAs({ ...ok, password: 'wrong guess' }), {
      ok: false,
      reason: 'invalid',
    });
  }
  const locked = await svc.authorizeAs(ok);
  assert.equal(locked.ok, false);
  assert.equal(!locked.ok && locked.reason, 'locked');
});

test('logIn: no authzid or the own one is a plain login; another one needs the service login', async () => {
  const guard = new LoginGuard(r.redis);
  const auth = createAuthenticator({ directory: dir, guard, appPasswords: new AppPasswords(r.redis) });
  const base = {
    ip: '203.0.113.5',
    username: 'alice@example.test',
    password: 'correct horse battery staple',
  };
  assert.equal((await logIn(auth, undefined, base)).ok, true);
  assert.equal((await logIn(auth, undefined, { ...base, authzid: 'ALICE@example.test' })).ok, true);
  assert.deepEqual(await logIn(auth, undefined, { ...base, authzid: 'bob@example.test' }), {
    ok: false,
    reason: 'invalid',
  });
  const svc = createServiceAuthorizer({
    directory: dir,
    guard,
    login: { name: 'webmail', password: SECRET, networks: ['203.0.113.0/24'] },
  });
  // a user's own password never acts for someone else, even with a service login configured
  assert.deepEqual(await logIn(auth, svc, { ...base, authzid: 'bob@example.test' }), {
    ok: false,
    reason: 'invalid',
  });
  assert.deepEqual(
    await logIn(auth, svc, { ...base, username: 'webmail', password: SECRET, authzid: 'bob@example.test' }),
    {
      ok: true,
      account: 'bob@example.test',
      via: 'service',
      cached: false,
      service: 'webmail',
      credential: { signOut: '0' },
    },
  );
});

test('the secret comes from the config or from a file', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'mailyard-secret-'));
  try {
    assert.equal(serviceLoginFromConfig({ service_login_name: 'webmail' }), null);
    assert.deepEqual(
      serviceLoginFromConfig({
        service_login_name: 'webmail',
        service_login_password: SECRET,
        service_login_networks: ['10.0.0.0/8'],
      }),
      { name: 'webmail', password: SECRET, networks: ['10.0.0.0/8'] },
    );
    writeFileSync(join(tmp, 'secret'), `${SECRET}\n`);
    assert.equal(
      serviceLoginFromConfig({
        service_login_name: 'webmail',
        service_login_password_file: join(tmp, 'secret'),
      })?.password,
      SECRET,
    );
    assert.throws(
      () =>
        serviceLoginFromConfig({
          service_login_name: 'webmail',
          service_login_password_file: join(tmp, 'none'),
        }),
      /^ConfigError: SERVICE_LOGIN_PASSWORD_FILE: cannot read .*ENOENT/,
    );
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
