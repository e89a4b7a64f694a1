import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bodyStructure, envelope, parseAddressList, parseMime, type Chunk } from '../src/index.js';

const flat = (c: Chunk[]) =>
  Buffer.concat(c.map((x) => (typeof x === 'string' ? Buffer.from(x) : x))).toString();

const multipart = [
  'From: =?utf-8?q?J=C3=B6rg?= <jorg@example.test>',
  'To: a@example.test, "B, C" <b@example.test>, Group: d@example.test, e@example.test;',
  'Subject: mixed',
  'Message-ID: <x@y>',
  'MIME-Version: 1.0',
  'Content-Type: multipart/mixed; boundary="XX"',
  '',
  'preamble',
  '--XX',
  'Content-Type: text/plain; charset=utf-8',
  '',
  'hello',
  '--XX',
  'Content-Type: application/pdf; name="a.pdf"',
  'Content-Transfer-Encoding: base64',
  'Content-Disposition: attachment; filename="a.pdf"',
  '',
  'AAAA',
  '--XX',
  'Content-Type: message/rfc822',
  '',
  'Subject: inner',
  'From: i@example.test',
  '',
  'inner body',
  '--XX--',
  '',
].join('\r\n');

void describe('MIME structure', () => {
  void it('renders BODYSTRUCTURE for multipart with an attachment and an embedded message', () => {
    const data = Buffer.from(multipart);
    const root = parseMime(data);
    assert.equal(root.children.length, 3);
    assert.equal(data.subarray(root.children[0]!.bodyStart, root.children[0]!.end).toString(), 'hello');
    const bs = flat(bodyStructure(root, true));
    assert.equal(
      bs,
      '(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 5 1 NIL NIL NIL NIL)' +
        '("APPLICATION" "PDF" ("NAME" "a.pdf") NIL NIL "BASE64" 4 NIL ("ATTACHMENT" ("FILENAME" "a.pdf")) NIL NIL)' +
        '("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 50 ' +
        '(NIL "inner" ((NIL NIL "i" "example.test")) ((NIL NIL "i" "example.test")) ((NIL NIL "i" "example.test")) NIL NIL NIL NIL NIL) ' +
        '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 10 1 NIL NIL NIL NIL) 4 NIL NIL NIL NIL)' +
        ' "MIXED" ("BOUNDARY" "XX") NIL NIL NIL)',
    );
  });

  void it('renders ENVELOPE with groups and quoted display names', () => {
    const env = flat(envelope(parseMime(Buffer.from(multipart))));
    assert.match(env, /\("B, C" NIL "b" "example.test"\)/);
    assert.match(
      env,
      /\(NIL NIL "Group" NIL\)\(NIL NIL "d" "example.test"\)\(NIL NIL "e" "example.test"\)\(NIL NIL NIL NIL\)/,
    );
    assert.match(env, /^\(NIL "mixed" \(\("=\?utf-8\?q\?J=C3=B6rg\?=" NIL "jorg" "example.test"\)\)/);
  });

  void it('parses odd address lists without throwing', () => {
    assert.deepEqual(parseAddressList('"a@b" <x@y>, (comment) z@w'), [
      { name: 'a@b', mailbox: 'x', host: 'y' },
      { name: null, mailbox: 'z', host: 'w' },
    ]);
    assert.deepEqual(parseAddressList('undisclosed-recipients:;'), [
      { name: null, mailbox: 'undisclosed-recipients', host: null, group: 'start' },
      { name: null, mailbox: null, host: null, group: 'end' },
    ]);
  });
});
