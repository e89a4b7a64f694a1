import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import { createTestRedis } from '@mailyard/testkit';
import {
  AccessError,
  CHECKS,
  DEFAULT_RESTRICTIONS,
  PolicyRules,
  RESTRICTION_LISTS,
  RestrictionError,
  addressKeys,
  clientKeys,
  normalizeAddressKey,
  normalizeClientKey,
  parseAccessAction,
  listAnswerMatches,
  listChecks,
  parseEntry,
  parseRate,
  parseRestriction,
  policyReply,
  showLists,
  splitEntries,
  type ListAnswerFilter,
} from '@mailyard/policy-rules';

/** The answer filter of a DNS list entry. */
function filter(entry: string): ListAnswerFilter {
  const r = parseRestriction(entry);
  assert.ok(r.name === 'reject_rbl_client' || r.name === 'reject_rhsbl_sender', entry);
  return r.value[0].answer!;
}

describe('restriction entries', () => {
  test('known checks with their arguments parse; the rest is refused in one sentence', () => {
    assert.deepEqual(parseRestriction('reject_rbl_client  zen.example'), {
      name: 'reject_rbl_client',
      args: ['zen.example'],
      value: [{ zone: 'zen.example', answer: null }],
    });
    assert.deepEqual(parseRestriction('check_rate client_messages 30/1m').value, [
      'client_messages',
      { limit: 30, windowMs: 60_000, spec: '30/1m' },
    ]);
    const refusals: [string, RegExp][] = [
      ['reject_everything', /^unknown restriction "reject_everything" \(/],
      [
        'reject_rbl_client',
        /^reject_rbl_client takes 1 argument, got 0 \(reject_rbl_client ZONE\[=d\.d\.d\.d\]\)$/,
      ],
      ['permit_mynetworks 10.0.0.0/8', /^permit_mynetworks takes 0 arguments, got 1/],
      ['check_rate client_connections lots', /^check_rate: bad rate "lots", expected e\.g\. 30\/1m$/],
      [
        'check_rate nonsense 1/1m',
        /^check_rate: unknown rate counter "nonsense" \(one of client_connections, /,
      ],
      ['check_client_access no/such', /^check_client_access: bad table name "no\/such"/],
      ['reject_rbl_client zen..example', /^reject_rbl_client: "zen\.\.example" is not a DNS zone name$/],
      [
        'reject_rbl_client zen.example=10.0.0.1',
        /^reject_rbl_client: bad list answer "10\.0\.0\.1": DNS lists answer in 127\.0\.0\.0\/8$/,
      ],
    ];
    for (const [entry, why] of refusals)
      assert.throws(
        () => parseRestriction(entry),
        (e) => e instanceof RestrictionError && why.test(e.message) && !e.message.includes('\n'),
        entry,
      );
  });

  test('an entry is written only into a list of a stage where it can decide something', () => {
    assert.equal(parseEntry('smtpd_data_restrictions', 'check_virus').name, 'check_virus');
    assert.throws(
      () => parseEntry('smtpd_client_restrictions', 'check_virus'),
      /check_virus can decide nothing in smtpd_client_restrictions, which runs at the connect stage; it works at the data stage \(smtpd_data_restrictions\)$/,
    );
    // a rate counter counts at one stage
    parseEntry('smtpd_sender_restrictions', 'check_rate client_messages 10/1m');
    assert.throws(
      () => parseEntry('smtpd_recipient_restrictions', 'check_rate client_messages 10/1m'),
      /it works at the mail stage \(smtpd_helo_restrictions, smtpd_sender_restrictions\)$/,
    );
    assert.throws(
      () => parseEntry('smtpd_client_restrictions', 'reject_non_fqdn_sender'),
      /it works at the mail, rcpt and data stages$/,
    );
    // the msa asks the client list once the user has logged in
    parseEntry('smtpd_client_restrictions', 'permit_sasl_authenticated');
    for (const l of RESTRICTION_LISTS) parseEntry(l, 'permit_mynetworks');
  });

  test('every default entry is valid where it stands', () => {
    for (const l of RESTRICTION_LISTS) for (const e of DEFAULT_RESTRICTIONS[l]) parseEntry(l, e);
  });

  test('the table: each check declares its stages, needs and replies consistently', () => {
    for (const [name, c] of Object.entries(CHECKS)) {
      assert.ok(c.stages.length, name);
      for (const r of c.replies) assert.equal(typeof policyReply[r], 'function', `${name}: ${r}`);
      // state every instance shares lives in Redis counters or the greylist
      if (c.sharedState)
        assert.ok(
          c.needs.includes('rate-counters') || c.needs.includes('greylist'),
          `${name} shares state it does not declare`,
        );
      else assert.ok(!c.needs.includes('rate-counters'), name);
    }
    const lines = listChecks();
    assert.equal(lines.length, Object.keys(CHECKS).length);
    assert.ok(
      lines.some((l) =>
        /^check_rate COUNTER LIMIT\/WINDOW +at most LIMIT per WINDOW .* \[connect, mail, rcpt\]$/.test(l),
      ),
    );
    assert.ok(lines.some((l) => /^reject_rbl_client ZONE\[=d\.d\.d\.d\] +refuse .* \[any stage\]$/.test(l)));
  });

  test("a list answer filter is Postfix's d.d.d.d: numbers, [n;m] lists and [n..m] ranges", () => {
    const zen = filter('reject_rbl_client zen.spamhaus.org=127.0.0.[2..11]');
    assert.equal(zen.text, '127.0.0.[2..11]');
    for (const a of ['127.0.0.2', '127.0.0.4', '127.0.0.11']) assert.ok(listAnswerMatches(zen, a), a);
    for (const a of ['127.0.0.1', '127.0.0.12', '127.255.255.254', '127.0.1.2'])
      assert.ok(!listAnswerMatches(zen, a), a);
    const some = filter('reject_rbl_client bl.example=127.0.0.[2;4..5]');
    assert.deepEqual(
      ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6'].map((a) =>
        listAnswerMatches(some, a),
      ),
      [true, false, true, true, false],
    );
    assert.ok(listAnswerMatches(filter('reject_rbl_client bl.example=127.0.[0..1].2'), '127.0.1.2'));
    assert.ok(listAnswerMatches(filter('reject_rbl_client bl.example=127.0.0.2'), '127.0.0.2'));
    assert.ok(!listAnswerMatches(filter('reject_rbl_client bl.example=127.0.0.2'), '127.0.0.20'));
    const refusals: [string, string][] = [
      ['127.0.0.[11..2]', 'the range 11..2 runs backwards'],
      ['127.0.0.[2..300]', '"300" is not a number from 0 to 255'],
      ['127.0.0.[2;;4]', '"" is not a number or a range n..m'],
      ['127.0.0.[2...4]', '"2...4" is not a number or a range n..m'],
      ['127.0.0.[2,4]', '"2,4" is not a number or a range n..m'],
      ['[126..127].0.0.2', 'DNS lists answer in 127.0.0.0/8'],
    ];
    for (const [answer, why] of refusals)
      assert.throws(
        () => parseRestriction(`reject_rhsbl_sender bl.example=${answer}`),
        (e) =>
          e instanceof RestrictionError &&
          e.message === `reject_rhsbl_sender: bad list answer "${answer}": ${why}`,
        answer,
      );
    for (const answer of ['127.0.0', '127.0.0.2.1', '127.0.0.[2', '127.0.0.x', '127.0.0.2=1', ''])
      assert.throws(
        () => parseRestriction(`reject_rbl_client bl.example=${answer}`),
        /: reject_rbl_client: bad list answer ".*", expected 127\.0\.0\.N or a pattern such as /,
        answer,
      );
  });

  test('a filter written from any sets of octets takes exactly the answers in them', () => {
    const octet = fc.uniqueArray(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 4 });
    fc.assert(
      fc.property(octet, octet, octet, fc.ipV4(), (b, c, d, probe) => {
        // each set written as a list of single numbers and ranges of consecutive ones
        const write = (set: number[]) => {
          const sorted = [...set].sort((x, y) => x - y);
          const parts: string[] = [];
          for (let i = 0; i < sorted.length;) {
            let j = i;
            while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
            parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}..${sorted[j]}`);
            i = j + 1;
          }
          return sorted.length === 1 ? `${sorted[0]}` : `[${parts.join(';')}]`;
        };
        const f = filter(`reject_rbl_client bl.example=127.${write(b)}.${write(c)}.${write(d)}`);
        const address = `127.${probe.split('.').slice(1).join('.')}`;
        const [, x, y, z] = address.split('.').map(Number);
        assert.equal(
          listAnswerMatches(f, address),
          b.includes(x!) && c.includes(y!) && d.includes(z!),
          `${f.text} ${address}`,
        );
        assert.ok(listAnswerMatches(f, `127.${b[0]}.${c[0]}.${d[0]}`), f.text);
      }),
    );
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

  test(
    'address keys with a recipient delimiter: the address without its extension next',
    { timeout: 10_000 },
    () => {
      assert.deepEqual(addressKeys('Joe+Lists@Example.COM', '+'), [
        'joe+lists@example.com',
        'joe@example.com',
        'example.com',
        'joe+lists@',
        'joe@',
      ]);
      // no extension, or the delimiter first: one address, as Postfix reads it
      assert.deepEqual(addressKeys('+joe@example.com', '+'), ['+joe@example.com', 'example.com', '+joe@']);
      assert.deepEqual(addressKeys('joe@example.com', '+'), addressKeys('joe@example.com'));
    },
  );

  test('an internationalized domain is one key, whichever form it is written in', { timeout: 10_000 }, () => {
    // SMTPUTF8 mail names the domain in U-labels; entries may be written either way
    assert.deepEqual(addressKeys('X@Müller.Test'), ['x@xn--mller-kva.test', 'xn--mller-kva.test', 'x@']);
    assert.equal(normalizeAddressKey('müller.test'), 'xn--mller-kva.test');
    assert.equal(normalizeAddressKey('Boss@Müller.test'), 'boss@xn--mller-kva.test');
    assert.equal(normalizeAddressKey('xn--mller-kva.test'), 'xn--mller-kva.test');
    assert.equal(normalizeAddressKey('jörg@'), 'jörg@');
    assert.ok(addressKeys('x@xn--mller-kva.test').includes(normalizeAddressKey('müller.test')));
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
    const version = (await rules.load()).version;
    await assert.rejects(rules.add('smtpd_helo_restrictions', 'reject_whatever'), /unknown restriction/);
    await assert.rejects(rules.add('smtpd_helo_restrictions', 'reject_rbl_client'), /takes 1 argument/);
    await assert.rejects(rules.add('smtpd_helo_restrictions', 'check_virus'), /can decide nothing/);
    await assert.rejects(
      rules.set('smtpd_helo_restrictions', ['permit_mynetworks', 'check_rate client_messages x']),
      /bad rate "x"/,
    );
    await assert.rejects(rules.set('smtpd_bogus_restrictions', []), /unknown restriction list/);
    assert.deepEqual(await rules.list('smtpd_helo_restrictions'), before);
    assert.equal((await rules.load()).version, version, 'nothing was announced');
  });

  test('an entry written behind the store: unknown fails the load, misplaced is named and removable', async () => {
    const key = 'policy:restrictions:smtpd_data_restrictions';
    await r.redis.rpush(key, 'check_virus', 'check_rate client_connections 5/1m');
    const { rules: loaded, misplaced } = await rules.load();
    assert.deepEqual(
      loaded.smtpd_data_restrictions.map((x) => x.name),
      ['check_virus', 'check_rate'],
    );
    assert.equal(misplaced.length, 1);
    assert.match(
      misplaced[0]!,
      /^check_rate client_connections 5\/1m can decide nothing in smtpd_data_restrictions/,
    );
    assert.deepEqual(await showLists(rules, 'smtpd_data_restrictions'), [
      'smtpd_data_restrictions =',
      '    check_virus',
      '    check_rate client_connections 5/1m    (can decide nothing at the data stage)',
    ]);
    // other changes to the list keep it (it is not moved), removing it works
    await rules.add('smtpd_data_restrictions', 'check_bulk');
    assert.deepEqual(await rules.remove('smtpd_data_restrictions', 'check_rate client_connections 5/1m'), [
      'check_virus',
      'check_bulk',
    ]);

    await r.redis.rpush(key, 'reject_all_the_things');
    await assert.rejects(rules.load(), /unknown restriction "reject_all_the_things"/);
    assert.match(
      (await showLists(rules, 'smtpd_data_restrictions')).at(-1)!,
      /^ {4}reject_all_the_things {4}\(refused by the policy service: unknown restriction "reject_all_the_things"/,
    );
    await rules.reset('smtpd_data_restrictions');
  });
});
