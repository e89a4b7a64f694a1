import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  bodyStructure,
  decodeText,
  encapsulated,
  envelope,
  findPart,
  envelopeText,
  parseAddressList,
  parseHeaderFields,
  parseMime,
  MAX_MIME_PARTS,
  type Chunk,
  type MimePart,
} from '../src/index.js';

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
    const bs = flat(bodyStructure(root, true, false));
    assert.equal(
      bs,
      '(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 5 0 NIL NIL NIL NIL)' +
        '("APPLICATION" "PDF" ("NAME" "a.pdf") NIL NIL "BASE64" 4 NIL ("ATTACHMENT" ("FILENAME" "a.pdf")) NIL NIL)' +
        '("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 50 ' +
        '(NIL "inner" ((NIL NIL "i" "example.test")) ((NIL NIL "i" "example.test")) ((NIL NIL "i" "example.test")) NIL NIL NIL NIL NIL) ' +
        '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 10 0 NIL NIL NIL NIL) 3 NIL NIL NIL NIL)' +
        ' "MIXED" ("BOUNDARY" "XX") NIL NIL NIL)',
    );
  });

  void it('shows message/global as an attached message in IMAP4rev2 only', () => {
    const data = Buffer.from(
      'Content-Type: message/global\r\n\r\nFrom: j@example.test\r\nSubject: inner\r\n\r\nhallo\r\n',
    );
    const root = parseMime(data);
    // IMAP4rev1 (RFC 3501 body-type-msg is MESSAGE/RFC822 alone): a basic part, no part inside
    assert.equal(flat(bodyStructure(root, false, false)), '("MESSAGE" "GLOBAL" NIL NIL NIL "7BIT" 47)');
    assert.equal(findPart(root, [1, 1], false), null);
    assert.equal(encapsulated(root, false), null);
    // IMAP4rev2 (RFC 9051 §7.5.2): envelope, structure and lines, and 1.1 is its body
    assert.equal(
      flat(bodyStructure(root, false, true)),
      '("MESSAGE" "GLOBAL" NIL NIL NIL "7BIT" 47 (NIL "inner" ((NIL NIL "j" "example.test")) ' +
        '((NIL NIL "j" "example.test")) ((NIL NIL "j" "example.test")) NIL NIL NIL NIL NIL) ' +
        '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 7 1) 4)',
    );
    assert.equal(findPart(root, [1, 1], true)?.type, 'text');
  });

  void it('shows an encoded message/global as a basic part, in IMAP4rev2 too', () => {
    // RFC 6532 §3.5: message/global may be base64; the message is in the decoded bytes
    const inner = Buffer.from('From: j@example.test\r\nSubject: inner\r\n\r\nhallo\r\n').toString('base64');
    const data = Buffer.from(
      `Content-Type: message/global\r\nContent-Transfer-Encoding: base64\r\n\r\n${inner}\r\n`,
    );
    const root = parseMime(data);
    assert.equal(encapsulated(root, true), null);
    assert.equal(flat(bodyStructure(root, false, true)), '("MESSAGE" "GLOBAL" NIL NIL NIL "BASE64" 66)');
    assert.equal(findPart(root, [1, 1], true), null);
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

  void it('keeps 8-bit header bytes as they are in ENVELOPE literals', () => {
    // raw UTF-8 in a header (RFC 6532), read as latin1: the literal counts bytes
    const subject = Buffer.from('Grüße', 'utf8');
    const raw = Buffer.concat([Buffer.from('Subject: '), subject, Buffer.from('\r\n\r\nbody')]);
    const env = Buffer.concat(envelope(parseMime(raw)) as Buffer[]);
    assert.ok(env.includes(Buffer.concat([Buffer.from(`{${subject.length}}\r\n`), subject])));
  });

  void it('parses only the wanted header fields, unfolded', () => {
    const text =
      'Received: from a\r\n by b\r\nSubject: one\r\n two\r\nX-Other: x\r\n\tfolded\r\nFrom: f@x\r\n';
    assert.deepEqual(parseHeaderFields(text, new Set(['subject', 'from'])), [
      { name: 'subject', value: 'one two' },
      { name: 'from', value: 'f@x' },
    ]);
    assert.equal(
      envelopeText(parseHeaderFields(text)),
      '(NIL "one two" ((NIL NIL "f" "x")) ((NIL NIL "f" "x")) ((NIL NIL "f" "x")) NIL NIL NIL NIL NIL)',
    );
  });
});

void describe('MIME sizes and line counts', () => {
  /** [size, lines] of each part of `body` under a multipart/mixed with boundary "b". */
  const sizes = (body: string): [number, number][] =>
    parseMime(Buffer.from('Content-Type: multipart/mixed; boundary=b\r\n\r\n' + body)).children.map((c) => [
      c.end - c.bodyStart,
      c.lines,
    ]);

  void it("counts the line ends of a part, the CRLF before a delimiter being the delimiter's", () => {
    assert.deepEqual(
      sizes(
        [
          '--b',
          '',
          'first line',
          'second line',
          '--b',
          '',
          'a line end',
          '',
          '--b',
          '',
          '',
          '',
          '--b--',
          '',
        ].join('\r\n'),
      ),
      [
        [23, 1],
        [12, 1],
        [2, 1],
      ],
    );
  });

  void it('gives a part whose header runs up to its delimiter no body, not one of minus 2 octets', () => {
    const body =
      '--b\r\nContent-Type: text/plain\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\n--b--\r\n';
    assert.deepEqual(sizes(body), [
      [0, 0],
      [12, 1],
    ]);
    const data = Buffer.from('Content-Type: multipart/mixed; boundary=b\r\n\r\n' + body);
    const [cut, msg] = parseMime(data).children;
    assert.equal(data.toString('latin1', cut!.start, cut!.bodyStart), 'Content-Type: text/plain\r\n');
    assert.equal(data.toString('latin1', msg!.message!.start, msg!.message!.bodyStart), 'Subject: x\r\n');
  });

  void it('counts no line for text after the last line end of a message', () => {
    const single = parseMime(Buffer.from('Subject: x\r\n\r\nline one\r\nline two'));
    assert.deepEqual([single.end - single.bodyStart, single.lines], [18, 1]);
    const outer = parseMime(
      Buffer.from('Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner one\r\ninner two'),
    );
    assert.equal(outer.lines, 3);
    assert.deepEqual([outer.message!.end - outer.message!.bodyStart, outer.message!.lines], [20, 1]);
  });
});

void describe('MIME limits', () => {
  const count = (p: MimePart): number =>
    1 + p.children.reduce((n, c) => n + count(c), 0) + (p.message ? count(p.message) : 0);

  void it('a message of nothing but boundaries lists at most MAX_MIME_PARTS parts', () => {
    const parts = 3 * MAX_MIME_PARTS;
    const msg = Buffer.from(
      'Content-Type: multipart/mixed; boundary=b\r\n\r\n' + '--b\r\n'.repeat(parts) + '--b--\r\n',
    );
    const started = process.hrtime.bigint();
    const tree = parseMime(msg);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    assert.equal(count(tree), MAX_MIME_PARTS);
    assert.ok(ms < 5000, `parsed in ${ms} ms`);
    // what the structure lists is still what the message says, up to the limit
    assert.equal(tree.children.length, MAX_MIME_PARTS - 1);
    assert.equal(tree.children[0]!.type, 'text');
  });

  void it('nested messages count towards the same limit', () => {
    let inner = 'Content-Type: text/plain\r\n\r\nhi\r\n';
    for (let i = 0; i < 40; i++) {
      const siblings = `--n${i}\r\nContent-Type: text/plain\r\n\r\nx\r\n`.repeat(400);
      inner =
        `Content-Type: multipart/mixed; boundary=n${i}\r\n\r\n` +
        siblings +
        `--n${i}\r\nContent-Type: message/rfc822\r\n\r\n` +
        inner +
        `\r\n--n${i}--\r\n`;
    }
    assert.ok(count(parseMime(Buffer.from(inner))) <= MAX_MIME_PARTS);
  });

  void it('a huge RFC 2231 segment number is shown as it came, at once', { timeout: 10_000 }, () => {
    const msg = Buffer.from(
      'Content-Type: text/plain; name*4294967294=x; title*0=a; title*1=b\r\n\r\nhi\r\n',
    );
    const started = process.hrtime.bigint();
    const params = flat(bodyStructure(parseMime(msg), false, false));
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    assert.match(params, /"NAME\*4294967294" "x"/i);
    assert.match(params, /"TITLE" "ab"/i);
    assert.ok(ms < 1000, `took ${ms} ms`);
  });
});

void describe('text of a part', () => {
  void it('reads 8-bit octets of a US-ASCII part as UTF-8, else as Windows-1252', () => {
    assert.equal(decodeText(Buffer.from('Köln', 'utf8'), 'us-ascii'), 'Köln');
    assert.equal(decodeText(Buffer.from('Köln', 'utf8'), 'US-ASCII'), 'Köln');
    assert.equal(decodeText(Buffer.from('Köln', 'latin1'), 'us-ascii'), 'Köln');
    assert.equal(decodeText(Buffer.from('Köln', 'latin1'), 'iso-8859-1'), 'Köln');
    assert.equal(decodeText(Buffer.from('Köln', 'utf8'), undefined), 'Köln');
    assert.equal(decodeText(Buffer.from('Köln', 'latin1'), 'no-such-charset'), 'Köln');
  });
});
