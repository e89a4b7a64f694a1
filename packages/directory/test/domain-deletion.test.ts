// A domain deleted while an account or alias is added to it, against Redis: each
// interleaving is forced by running the other operation to its end at a chosen command
// of the first, so no account or alias is ever left in a domain that no longer exists.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { createTestRedis, interleavedRedis } from '@mailyard/testkit';
import { Directory, DirectoryError } from '../src/index.js';

const r = createTestRedis();
after(() => r.cleanup());
const PASSWORD = 'correct horse battery staple';
/** The directory of the other administrator, acting in between. */
const other = new Directory(r.redis);
const interleaved = (at: Parameters<typeof interleavedRedis>[1], meanwhile: () => Promise<unknown>) =>
  interleavedRedis(r.redis, at, meanwhile);

/** The add's check that the domain is local (SISMEMBER domains <d>). */
const domainCheck = (d: string) => (command: string, args: readonly unknown[]) =>
  command === 'sismember' && args[0] === 'domains' && args[1] === d;
/** The deletion's count of the domain's accounts, however it is asked. */
const accountCount = (d: string) => (_command: string, args: readonly unknown[]) =>
  args.includes(`accounts:${d}`);

async function refusedAsNotLocal(p: Promise<unknown>, d: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof DirectoryError, String(err));
    assert.equal(err.code, 'unknown_domain');
    assert.equal(err.message, `domain ${d} is not a local domain (add it with: mailyard domain add ${d})`);
    return true;
  });
}

/** Nothing of `d` is left: not the domain, nor an account or alias in it. */
async function nothingLeftOf(d: string, address: string): Promise<void> {
  assert.deepEqual(await other.listDomains(), []);
  assert.equal(await other.accountExists(address), false);
  assert.deepEqual(await other.listUsers(), []);
  assert.deepEqual(await r.redis.exists(`accounts:${d}`, `aliases:${d}`, `alias:${address}`), 0);
  assert.deepEqual(await other.lookup(address), { localDomain: false, match: null });
}

test(
  'an account added to a domain deleted after its check is refused, and nothing of it is left',
  { timeout: 10_000 },
  async () => {
    const d = 'one.test';
    await other.addDomain(d);
    // the deletion runs to its end once the add has found the domain local
    const add = new Directory(
      interleaved(domainCheck(d), async () => {
        await other.delDomain(d);
      }),
    );
    await refusedAsNotLocal(add.addUser(`ann@${d}`, PASSWORD), d);
    await nothingLeftOf(d, `ann@${d}`);
  },
);

test(
  'an account added while a deletion of its domain runs: the deletion wins, the account is refused',
  { timeout: 10_000 },
  async () => {
    const d = 'two.test';
    await other.addDomain(d);
    let added: Promise<string> | undefined;
    // the add runs to its end once the deletion has counted the domain's accounts
    const del = new Directory(
      interleaved(accountCount(d), async () => {
        added = other.addUser(`bob@${d}`, PASSWORD);
        await added.catch(() => undefined);
      }),
    );
    await del.delDomain(d);
    await refusedAsNotLocal(added!, d);
    await nothingLeftOf(d, `bob@${d}`);
  },
);

test(
  'an alias added to a domain deleted after its check is refused, and nothing of it is left',
  { timeout: 10_000 },
  async () => {
    const d = 'three.test';
    await other.addDomain(d);
    const add = new Directory(
      interleaved(domainCheck(d), async () => {
        await other.delDomain(d);
      }),
    );
    await refusedAsNotLocal(add.addAlias(`sales@${d}`, ['someone@elsewhere.example']), d);
    await nothingLeftOf(d, `sales@${d}`);
  },
);

test(
  'an account added before the deletion counts is counted: the deletion is refused',
  { timeout: 10_000 },
  async () => {
    const d = 'four.test';
    await other.addDomain(d);
    await other.addUser(`cy@${d}`, PASSWORD);
    await assert.rejects(other.delDomain(d), {
      name: 'DirectoryError',
      code: 'in_use',
      message: `domain ${d} still has 1 account and 0 aliases; delete them first`,
    });
    assert.deepEqual(await other.listUsers(d), [`cy@${d}`]);
    await other.delUser(`cy@${d}`);
    await other.delDomain(d);
  },
);
