// A password check tells a wrong password from a hashing module that cannot be loaded: the
// first is a failed login, counted toward a lockout; the second must be an error (a
// temporary failure to the client), or a broken install would count every login of every
// user as a wrong password and lock them all out.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { test } from 'node:test';
import { hashPassword, verifyPassword } from '../src/passwords.js';

const run = promisify(execFile);

test(
  'the right password is true, a wrong one or a value that is no hash false',
  { timeout: 60_000 },
  async () => {
    const stored = await hashPassword('correct horse battery staple');
    assert.equal(await verifyPassword(stored, 'correct horse battery staple'), true);
    assert.equal(await verifyPassword(stored, 'correct horse battery stapl'), false);
    assert.equal(await verifyPassword('not a hash', 'correct horse battery staple'), false);
  },
);

test(
  'a hashing module that cannot be loaded is an error, not a wrong password',
  { timeout: 60_000 },
  async () => {
    const stored = await hashPassword('correct horse battery staple');
    // a process in which @node-rs/argon2 cannot be resolved, as after a broken install
    const hooks = `export async function resolve(spec, ctx, next) {
    if (spec === '@node-rs/argon2') throw new Error('argon2 missing');
    return next(spec, ctx);
  }`;
    const register = `import { register } from 'node:module';
    register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hooks)}));`;
    const passwords = fileURLToPath(new URL('../src/passwords.ts', import.meta.url));
    const script = `import(${JSON.stringify(passwords)})
    .then((m) => m.verifyPassword(${JSON.stringify(stored)}, 'correct horse battery staple'))
    .then((r) => console.log('answered ' + r), (e) => console.log('failed: ' + e.message));`;
    const { stdout } = await run(
      process.execPath,
      ['--import', 'tsx', '--import', `data:text/javascript,${encodeURIComponent(register)}`, '-e', script],
      { timeout: 30_000 },
    );
    assert.match(stdout, /^failed: .*argon2 missing/m);
  },
);
