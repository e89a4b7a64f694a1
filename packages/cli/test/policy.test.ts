import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cliHarness } from './harness.js';

// `mailyard policy`: a list is checked against the table of checks before anything is
// written; a refusal is one sentence on stderr and exit status 1.

test(
  'policy add of an unknown restriction is refused and changes nothing',
  { timeout: 30_000 },
  async (t) => {
    const cli = cliHarness(t);
    const before = await cli.ok(['policy', 'show', 'smtpd_client_restrictions']);
    assert.deepEqual(await cli.run(['policy', 'add', 'smtpd_client_restrictions', 'reject_all_the_things']), {
      code: 1,
      stdout: '',
      stderr:
        'mailyard: unknown restriction "reject_all_the_things" (mailyard policy checks lists the known ones)\n',
    });
    assert.equal(await cli.ok(['policy', 'show', 'smtpd_client_restrictions']), before);
  },
);

test(
  'policy set with bad arguments or a check in the wrong list is refused',
  { timeout: 30_000 },
  async (t) => {
    const cli = cliHarness(t);
    const refusals: [string[], string][] = [
      [
        [
          'policy',
          'set',
          'smtpd_sender_restrictions',
          'permit_mynetworks,',
          'check_rate',
          'client_messages',
          'lots',
        ],
        'check_rate: bad rate "lots", expected e.g. 30/1m',
      ],
      [
        ['policy', 'add', 'smtpd_client_restrictions', 'reject_rbl_client'],
        'reject_rbl_client takes 1 argument, got 0 (reject_rbl_client ZONE[=d.d.d.d])',
      ],
      [
        ['policy', 'add', 'smtpd_client_restrictions', 'reject_rbl_client', 'zen.example=127.0.0.[11..2]'],
        'reject_rbl_client: bad list answer "127.0.0.[11..2]": the range 11..2 runs backwards',
      ],
      [
        ['policy', 'add', 'smtpd_client_restrictions', 'check_virus'],
        'check_virus can decide nothing in smtpd_client_restrictions, which runs at the connect stage; ' +
          'it works at the data stage (smtpd_data_restrictions)',
      ],
    ];
    for (const [argv, sentence] of refusals)
      assert.deepEqual(
        await cli.run(argv),
        { code: 1, stdout: '', stderr: `mailyard: ${sentence}\n` },
        argv.join(' '),
      );
    assert.match(
      await cli.ok(['policy', 'show', 'smtpd_sender_restrictions']),
      /^smtpd_sender_restrictions =\n {4}permit_mynetworks\n {4}permit_sasl_authenticated\n/,
    );
  },
);

test(
  'policy remove of an entry that is not in the list says so and fails',
  { timeout: 30_000 },
  async (t) => {
    const cli = cliHarness(t);
    const before = await cli.ok(['policy', 'show', 'smtpd_client_restrictions']);
    assert.deepEqual(
      await cli.run(['policy', 'remove', 'smtpd_client_restrictions', 'reject_rbl_client', 'zen.example']),
      {
        code: 1,
        stdout: '',
        stderr:
          'mailyard: restriction list smtpd_client_restrictions has no entry reject_rbl_client zen.example\n',
      },
    );
    assert.equal(await cli.ok(['policy', 'show', 'smtpd_client_restrictions']), before);
  },
);

test(
  'policy allow|block del of a sender not on the list says so and fails, the list kept',
  { timeout: 30_000 },
  async (t) => {
    const cli = cliHarness(t);
    assert.equal(
      await cli.ok(['policy', 'block', 'add', 'ann@example.test', 'Spam@Pest.test']),
      'ann@example.test block: spam@pest.test\n',
    );
    for (const kind of ['allow', 'block'])
      assert.deepEqual(await cli.run(['policy', kind, 'del', 'Ann@example.test', 'friend@pest.test']), {
        code: 1,
        stdout: '',
        stderr: `mailyard: ${kind} list of ann@example.test has no entry friend@pest.test\n`,
      });
    assert.equal(
      await cli.ok(['policy', 'block', 'show', 'ann@example.test']),
      'ann@example.test block: spam@pest.test\n',
    );
    // removed as written, once; the second time it is not there
    assert.equal(
      await cli.ok(['policy', 'block', 'del', 'ann@example.test', 'SPAM@pest.test']),
      'ann@example.test block: (empty)\n',
    );
    assert.deepEqual(await cli.run(['policy', 'block', 'del', 'ann@example.test', 'spam@pest.test']), {
      code: 1,
      stdout: '',
      stderr: 'mailyard: block list of ann@example.test has no entry spam@pest.test\n',
    });
    const audit = await cli.ok(['audit', '--limit', '5']);
    assert.equal(audit.match(/policy\.block\.del/g)?.length, 1, audit);
  },
);

test('policy access del of an entry that is not there says so and fails', { timeout: 30_000 }, async (t) => {
  const cli = cliHarness(t);
  assert.deepEqual(await cli.run(['policy', 'access', 'del', 'client_access', '192.0.2.99']), {
    code: 1,
    stdout: '',
    stderr: 'mailyard: access table client_access has no entry 192.0.2.99/32\n',
  });
});

test('policy checks lists every check with its arguments and stages', { timeout: 30_000 }, async (t) => {
  const cli = cliHarness(t);
  const out = await cli.ok(['policy', 'checks']);
  assert.match(
    out,
    /^check_rate COUNTER LIMIT\/WINDOW +at most LIMIT per WINDOW of a COUNTER \(client_connections, .*\) \[connect, mail, rcpt\]$/m,
  );
  assert.match(out, /^check_virus +scan with clamd \(CLAMD_URL\) \[data\]$/m);
  assert.match(out, /^permit +stop this list, accept \[any stage\]$/m);
});
