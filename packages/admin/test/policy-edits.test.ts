// Two administrators editing one restriction list at once (the CLI and the console, two
// consoles), against Redis: each interleaving is forced by running the other edit to its
// end at the first command the first edit sends for the list, so no change is lost, a
// double removal is answered once and refused once, and a stale copy is not saved.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { PolicyKeys, RestrictionError } from '@mailyard/policy-rules';
import { createTestRedis, interleavedRedis } from '@mailyard/testkit';
import { Operations } from '../src/index.js';

const r = createTestRedis();
after(() => r.cleanup());
const LIST = 'smtpd_client_restrictions';
/** The other administrator, acting in between. */
const other = new Operations(r.redis, 'cli:root');

/** The first administrator's rules: `meanwhile` runs once its edit has sent its first command for the list. */
const interleaved = (meanwhile: () => Promise<unknown>) =>
  new Operations(
    interleavedRedis(r.redis, (_command, args) => args.includes(PolicyKeys.restrictions(LIST)), meanwhile),
    'bob@admins.test',
  ).policy();

test(
  'an entry removed by two administrators at once is removed once, the other told it is gone',
  { timeout: 10_000 },
  async () => {
    await other
      .policy()
      .set(LIST, ['permit_mynetworks', 'reject_rbl_client zen.example', 'check_client_access t']);
    let meanwhile: Promise<string[]> | undefined;
    const second = interleaved(async () => {
      meanwhile = other.policy().remove(LIST, 'reject_rbl_client zen.example');
      await meanwhile.catch(() => undefined);
    });
    const settled = await Promise.allSettled([second.remove(LIST, 'reject_rbl_client zen.example')]);
    settled.push(...(await Promise.allSettled([meanwhile!])));
    const done = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    const refused = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as unknown] : []));
    assert.deepEqual(done, [['permit_mynetworks', 'check_client_access t']]);
    assert.equal(refused.length, 1);
    assert.ok(refused[0] instanceof RestrictionError, String(refused[0]));
    assert.deepEqual(
      [refused[0].code, refused[0].message],
      ['not_found', `restriction list ${LIST} has no entry reject_rbl_client zen.example`],
    );
    assert.deepEqual(await other.policy().list(LIST), ['permit_mynetworks', 'check_client_access t']);
    // audited once: the removal that happened
    const [removal, before] = await other.readAudit({ limit: 2 });
    assert.deepEqual(
      [removal?.action, removal?.detail, before?.action],
      ['policy.remove', { entry: 'reject_rbl_client zen.example' }, 'policy.set'],
    );
  },
);

test('two entries added at once are both kept', { timeout: 10_000 }, async () => {
  await other.policy().set(LIST, ['permit_mynetworks']);
  const second = interleaved(() => other.policy().add(LIST, 'reject_rbl_client one.example'));
  await second.add(LIST, 'reject_rbl_client two.example');
  assert.deepEqual((await other.policy().list(LIST)).sort(), [
    'permit_mynetworks',
    'reject_rbl_client one.example',
    'reject_rbl_client two.example',
  ]);
});

test('an entry removed while another is added: both changes are kept', { timeout: 10_000 }, async () => {
  await other.policy().set(LIST, ['permit_mynetworks', 'reject_rbl_client old.example']);
  const second = interleaved(() => other.policy().add(LIST, 'reject_rbl_client new.example', 1));
  await second.remove(LIST, 'reject_rbl_client old.example');
  assert.deepEqual(await other.policy().list(LIST), ['reject_rbl_client new.example', 'permit_mynetworks']);
});

test(
  'a list saved from a copy that another change made stale is refused, the change kept',
  { timeout: 10_000 },
  async () => {
    // the console loads the list, `mailyard policy add` changes it, the console saves
    const loaded = await other.policy().set(LIST, ['permit_mynetworks']);
    await other.policy().add(LIST, 'reject_rbl_client zen.example');
    const page = new Operations(r.redis, 'bob@admins.test').policy();
    await assert.rejects(
      page.set(LIST, ['permit_mynetworks', 'check_client_access t'], loaded),
      (err: unknown) => {
        assert.ok(err instanceof RestrictionError, String(err));
        assert.deepEqual(
          [err.code, err.message],
          [
            'changed',
            `restriction list ${LIST} was changed meanwhile, it is now: permit_mynetworks, reject_rbl_client zen.example; load it again and redo the change`,
          ],
        );
        return true;
      },
    );
    assert.deepEqual(await other.policy().list(LIST), ['permit_mynetworks', 'reject_rbl_client zen.example']);
    assert.equal((await other.readAudit({ limit: 1 }))[0]?.action, 'policy.add');
    // saved from the list as it is now, it is saved
    const now = await page.list(LIST);
    assert.deepEqual(await page.set(LIST, [...now, 'check_client_access t'], now), [
      'permit_mynetworks',
      'reject_rbl_client zen.example',
      'check_client_access t',
    ]);
  },
);

test(
  'a list never set is edited from its defaults, and one emptied stays empty',
  { timeout: 10_000 },
  async () => {
    await other.policy().reset(LIST);
    const defaults = await other.policy().list(LIST);
    assert.deepEqual(await other.policy().add(LIST, 'reject_rbl_client zen.example'), [
      ...defaults,
      'reject_rbl_client zen.example',
    ]);
    for (const e of [...defaults, 'reject_rbl_client zen.example']) await other.policy().remove(LIST, e);
    assert.deepEqual(await other.policy().list(LIST), []);
    assert.deepEqual((await other.policy().load()).rules[LIST], []);
  },
);
