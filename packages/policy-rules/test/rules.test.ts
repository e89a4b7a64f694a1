import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import { createTestRedis } from '@mailyard/testkit';
import {
  AccessError,
  DEFAULT_RESTRICTIONS,
  PolicyRules,
  RESTRICTION_LISTS,
  RestrictionError,
  addressKeys,
  clientKeys,
  normalizeClientKey,
  parseAccessAction,
  parseRate,
  parseRestriction,
  showLists,
  splitEntries,
} from '@mailyard/policy-rules';

describe('restriction entries', () => {
  test('known checks with their arguments parse; the rest is refused in one sentence', () => {
    assert.deepEqual(parseRestriction('reject_rbl_client  zen.example'), {
      name: 'reject_rbl_client',
      args: ['zen.example'],
    });
    assert.throws(() => parseRestriction('reject_everything'), /unknown restriction "reject_everything"/);
    assert.throws(() => parseRestriction('reject_rbl_client'), /takes 1 argument\(s\), got 0/);
    assert.throws(() => parseRestriction('check_rate client_connections lots'), /bad rate "lots"/);
    assert.throws(() => parseRestriction('check_rate nonsense 1/1m'), RestrictionError);
  });

  test('every default entry is valid', () => {
    for (const l of RESTRICTION_LISTS) for (const e of DEFAULT_RESTRICTIONS[l]) parseRestriction(e);
  });

  test('rates', () => {
    assert.deepEqual(parseRate('30/1m'), { limit: 30, windowMs: 60_000 });
    assert.deepEqual(parseRate('100/h'), { limit: 100, windowMs: 3_600_000 });
    assert.deepEqual(parseRate('5'), { limit: 5, windowMs: 3_600_000 });
    assert.equal(parseRate('0/1m'), null);
  });

  test('Postfix-style comma lists', () => {
    assert.deepEqual(splitEntries(['permit_mynetworks,', 'reject_rbl_client', 'zen.example,reject']), [
      'permit_mynetworks',
      'reject_rbl_client zen.example',
      'reject',
    ]);
  });
});

describe('access tables', () => {
  test('actions', () => {
    assert.deepEqual(parseAccessAction('OK'), { kind: 'permit' });
    assert.deepEqual(parseAccessAction('REJECT go away'), {
      kind: 'reject',
      code: 554,
      enhanced: '5.7.1',
      text: 'go away',
    });
    assert.deepEqual(parseAccessAction('450 4.7.1 later'), {
      kind: 'defer',
      code: 450,
      enhanced: '4.7.1',
      text: 'later',
    });
    assert.deepEqual(parseAccessAction('HOLD'), { kind: 'hold' });
    assert.throws(() => parseAccessAction('550 4.7.1 x'), /does not match/);
    assert.throws(() => parseAccessAction('MAYBE'), AccessError);
  });

  test('client keys: every containing network, most specific first', () => {
    const keys = clientKeys('192.0.2.77');
    assert.equal(keys[0], '192.0.2.77/32');
    assert.ok(keys.includes('192.0.2.0/24'));
    assert.equal(keys.at(-1), '192.0.0.0/8');
    assert.equal(normalizeClientKey('192.0.2.99/24'), '192.0.2.0/24');
    assert.equal(clientKeys('2001:db8::1')[0], '2001:db8:0:0:0:0:0:1/128');
  });

  test('a stored CIDR key is always among the lookup keys of an address inside it (property)', () => {
    fc.assert(
      fc.property(fc.ipV4(), fc.integer({ min: 8, max: 32 }), (ip, prefix) => {
        assert.ok(clientKeys(ip).includes(normalizeClientKey(`${ip}/${prefix}`)));
      }),
    );
  });

  test('address keys: address, domain, parent domains, local@; <> for the null sender', () => {
    assert.deepEqual(addressKeys('Joe@Mail.Example.COM'), [
      'joe@mail.example.com',
      'mail.example.com',
      'example.com',
      'joe@',
    ]);
    assert.deepEqual(addressKeys(''), ['<>']);
  });
});

describe('rules in Redis', () => {
  const r = createTestRedis();
  after(() => r.cleanup());
  const rules = new PolicyRules(r.redis, r.prefix);

  test('defaults until set; an emptied list stays empty; every change bumps the version', async () => {
    assert.deepEqual(
      await rules.list('smtpd_relay_restrictions'),
      DEFAULT_RESTRICTIONS.smtpd_relay_restrictions,
    );
    await rules.set('smtpd_client_restrictions', []);
    assert.deepEqual(await rules.list('smtpd_client_restrictions'), []);
    const { rules: loaded, version } = await rules.load();
    assert.deepEqual(loaded.smtpd_client_restrictions, []);
    assert.equal(version, 1);
    await rules.add('smtpd_client_restrictions', 'reject_rbl_client zen.example');
    await rules.add('smtpd_client_restrictions', 'permit_mynetworks', 1);
    assert.deepEqual(await rules.list('smtpd_client_restrictions'), [
      'permit_mynetworks',
      'reject_rbl_client zen.example',
    ]);
    assert.equal((await rules.load()).version, 3);
    const lines = await showLists(rules, 'smtpd_client_restrictions');
    assert.deepEqual(lines, [
      'smtpd_client_restrictions =',
      '    permit_mynetworks',
      '    reject_rbl_client zen.example',
    ]);
  });

  test('a bad entry is refused and changes nothing', async () => {
    const before = await rules.list('smtpd_helo_restrictions');
    await assert.rejects(rules.add('smtpd_helo_restrictions', 'reject_whatever'), /unknown restriction/);
    await assert.rejects(rules.set('smtpd_bogus_restrictions', []), /unknown restriction list/);
    assert.deepEqual(await rules.list('smtpd_helo_restrictions'), before);
  });
});
