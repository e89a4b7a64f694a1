import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  applySubmissionFixups,
  fieldValue,
  fieldsNamed,
  joinMessage,
  mailboxAddresses,
  splitMessage,
} from '../src/headers.js';
import { ownsAddress } from '../src/sender.js';

const b = (s: string) => Buffer.from(s, 'utf8');
const opts = {
  date: 'Fri, 27 Nov 2026 20:00:00 +0000',
  messageId: '<id@host.test>',
  from: '<a@example.test>',
};

// header fields: a name, a value with odd spacing and optional folded lines
const fieldArb = fc
  .tuple(
    fc.constantFrom(
      'Subject',
      'To',
      'Cc',
      'Bcc',
      'BCC',
      'X-Custom',
      'Date',
      'Message-ID',
      'From',
      'Received',
    ),
    fc.stringMatching(/^[ -~]{0,30}$/),
    fc.array(fc.stringMatching(/^[\t ][ -~]{0,20}$/), { maxLength: 2 }),
  )
  .map(([name, value, folds]) => `${name}:${value}\r\n${folds.map((f) => `${f}\r\n`).join('')}`);
const bodyArb = fc.array(fc.constantFrom('text', '', '.', 'Bcc: not a header', ' indented'), {
  maxLength: 5,
});

test('split and join give back every byte', () => {
  fc.assert(
    fc.property(fc.array(fieldArb, { maxLength: 8 }), bodyArb, fc.boolean(), (fields, body, sep) => {
      const raw = b(fields.join('') + (sep ? '\r\n' + body.map((l) => l + '\r\n').join('') : ''));
      assert.ok(joinMessage(splitMessage(raw)).equals(raw));
    }),
  );
});

test('fix-ups only remove Bcc and append missing fields; everything else is byte-identical', () => {
  fc.assert(
    fc.property(fc.array(fieldArb, { maxLength: 8 }), bodyArb, (fields, bodyLines) => {
      const body = bodyLines.map((l) => l + '\r\n').join('');
      const raw = b(fields.join('') + '\r\n' + body);
      const res = applySubmissionFixups(splitMessage(raw), opts);
      const kept = fields.filter((f) => !/^bcc:/i.test(f)).join('');
      const text = res.message.toString('utf8');
      assert.ok(text.startsWith(kept), 'kept fields changed or moved');
      const added = text.slice(kept.length, text.length - body.length - 2);
      const has = (n: string) => fields.some((f) => f.toLowerCase().startsWith(`${n}:`));
      const want =
        (has('from') ? '' : `From: ${opts.from}\r\n`) +
        (has('date') ? '' : `Date: ${opts.date}\r\n`) +
        (has('message-id') ? '' : `Message-ID: ${opts.messageId}\r\n`);
      assert.equal(added, want);
      assert.ok(text.endsWith('\r\n' + body));
      assert.equal(res.removedBcc, fields.length - fields.filter((f) => !/^bcc:/i.test(f)).length);
    }),
  );
});

test('a message with no blank line and no body still gets its fields in the header', () => {
  const res = applySubmissionFixups(splitMessage(b('Subject: only headers\r\n')), opts);
  assert.equal(
    res.message.toString(),
    `Subject: only headers\r\nFrom: ${opts.from}\r\nDate: ${opts.date}\r\nMessage-ID: ${opts.messageId}\r\n\r\n`,
  );
});

test('a "Bcc:" line in the body is not a header', () => {
  const raw = b('Subject: x\r\n\r\nBcc: stays@example.test\r\n');
  const res = applySubmissionFixups(splitMessage(raw), opts);
  assert.equal(res.removedBcc, 0);
  assert.ok(res.message.toString().endsWith('\r\n\r\nBcc: stays@example.test\r\n'));
});

test('From: values: display names, encoded words, groups, folding', () => {
  const m = splitMessage(
    b(
      'From: "Doe, Jane" <jane@example.test>,\r\n =?UTF-8?Q?J=C3=BCrgen?= <j@example.test>\r\n' +
        'Sender: Team: a@example.test, b@example.test;\r\n\r\n',
    ),
  );
  assert.deepEqual(mailboxAddresses(fieldValue(fieldsNamed(m, 'from')[0]!)), [
    'jane@example.test',
    'j@example.test',
  ]);
  assert.deepEqual(mailboxAddresses(fieldValue(fieldsNamed(m, 'SENDER')[0]!)), [
    'a@example.test',
    'b@example.test',
  ]);
});

test('ownership: exact, case-insensitive, plus-address; never a lookalike', () => {
  const owned = new Set(['alice@example.test', 'team@example.test']);
  for (const a of ['alice@example.test', 'ALICE@Example.Test', 'alice+x@example.test', 'team+y@example.test'])
    assert.equal(ownsAddress(owned, a, '+'), true, a);
  for (const a of [
    'alice@example.test.evil',
    'xalice@example.test',
    'alice@[127.0.0.1]',
    '"alice@example.test"@evil.test',
    'alice',
    '',
  ])
    assert.equal(ownsAddress(owned, a, '+'), false, a);
});
