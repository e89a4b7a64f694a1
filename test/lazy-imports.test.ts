// Packages the `mailyard` command loads only when a command needs them (argon2, dns-packet)
// are imported inside code that also tells failures apart. A package that cannot be loaded
// (a broken install) must be an error of its own there, not an answer: for argon2 not a
// wrong password (every login of every user would count toward a lockout), for dns-packet
// not a server that did not answer (mail deferred for a cause that is not the cause).
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { hashPassword } from '@mailyard/directory';
import { runWithoutPackage } from '@mailyard/testkit';

const source = (path: string) => JSON.stringify(fileURLToPath(new URL(path, import.meta.url)));
const outcome = `.then((r) => console.log('answered ' + JSON.stringify(r)), (e) => console.log('failed: ' + e.message));`;

test('argon2 that cannot be loaded is an error, not a wrong password', { timeout: 60_000 }, async () => {
  const stored = await hashPassword('correct horse battery staple');
  const out = await runWithoutPackage(
    '@node-rs/argon2',
    `import(${source('../packages/directory/src/passwords.ts')})
      .then((m) => m.verifyPassword(${JSON.stringify(stored)}, 'correct horse battery staple'))${outcome}`,
  );
  assert.match(out, /^failed: .*@node-rs\/argon2 missing/m);
});

test(
  'dns-packet that cannot be loaded is an error, not a server that did not answer',
  { timeout: 60_000 },
  async (t) => {
    // a server that never answers: without the package, every try would time out
    const silent = createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    t.after(() => silent.close());
    const out = await runWithoutPackage(
      'dns-packet',
      `import(${source('../packages/dns/src/index.ts')})
      .then((m) => m.createResolver({ servers: ['127.0.0.1:${silent.address().port}'], timeoutMs: 400 }).resolve4('mx.example.test'))${outcome}`,
    );
    assert.match(out, /^failed: .*dns-packet missing/m);
  },
);
