import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { Splitter, type MimeNode, type SplitterChunk } from '@zone-eu/mailsplit';
import fc from 'fast-check';
import { downgradeTo7Bit } from '../src/mime-downgrade.js';

describe('7-bit conversion (RFC 6152 §3, for a server without 8BITMIME)', () => {
  const converted = async (message: string | Buffer): Promise<string> => {
    const r = await downgradeTo7Bit(Buffer.from(message));
    assert.equal(r.kind, 'converted', r.kind === 'refused' ? r.reason : '');
    assert.ok(r.kind === 'converted' && !r.data.some((b) => b > 0x7f), 'only 7-bit data');
    return r.kind === 'converted' ? r.data.toString('latin1') : '';
  };
  const refusal = async (message: string | Buffer): Promise<string> => {
    const r = await downgradeTo7Bit(Buffer.from(message));
    assert.equal(r.kind, 'refused');
    return r.kind === 'refused' ? r.reason : '';
  };
  /** Each leaf part's decoded content, as the same MIME library reads it. */
  const decodedParts = async (message: Buffer): Promise<Buffer[]> => {
    const parts: Buffer[] = [];
    let current: { node: MimeNode; chunks: Buffer[] } | null = null;
    const done = async () => {
      if (!current) return;
      const decoder = current.node.getDecoder();
      const out: Buffer[] = [];
      decoder.on('data', (c: Buffer) => out.push(c));
      const ended = new Promise((r) => decoder.once('end', r));
      decoder.end(Buffer.concat(current.chunks));
      await ended;
      parts.push(Buffer.concat(out));
      current = null;
    };
    for await (const chunk of Readable.from([message]).pipe(new Splitter({ ignoreEmbedded: true }))) {
      const c = chunk as SplitterChunk;
      if (c.type === 'node') {
        await done();
        if (!c.multipart) current = { node: c, chunks: [] };
      } else if (c.type === 'body' && current) current.chunks.push(c.value);
    }
    await done();
    return parts;
  };

  test('an attached message is converted inside, and labelled 7bit', async () => {
    const out = await converted(
      'From: a@x.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n' +
        '--b\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n' +
        'Content-Transfer-Encoding: 8bit\r\n\r\nSubject: inner\r\n\r\nKöln\r\n--b--\r\n',
    );
    assert.match(
      out,
      /Content-Type: message\/rfc822\r\nContent-Disposition: attachment\r\nContent-Transfer-Encoding: 7bit\r\n\r\nSubject: inner\r\n/,
    );
    assert.match(out, /\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nK=C3=B6ln\r\n--b--\r\n$/);
  });

  test('a body that is not UTF-8 is text of charset unknown-8bit (RFC 1428)', async () => {
    const body = Buffer.from('K\xf6ln\r\n', 'latin1');
    const message = Buffer.concat([Buffer.from('From: a@x.test\r\nSubject: s\r\n\r\n'), body]);
    const out = await converted(message);
    assert.ok(
      out.startsWith(
        'From: a@x.test\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=unknown-8bit\r\n' +
          'Content-Transfer-Encoding: quoted-printable\r\n\r\n',
      ),
      out,
    );
    assert.deepEqual(await decodedParts(Buffer.from(out, 'latin1')), [body]);
  });

  test('7-bit parts and the structure around them stay byte for byte', async () => {
    const ascii = '--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n';
    const out = await converted(
      'From: a@x.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\npre\r\n' +
        ascii +
        '--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nä\r\n--b--\r\npost\r\n',
    );
    assert.ok(
      out.startsWith('From: a@x.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\npre\r\n' + ascii),
    );
    assert.ok(out.endsWith('\r\n--b--\r\npost\r\n'));
  });

  test('8-bit data no encoding can carry: refused, with the reason', async () => {
    assert.match(await refusal('Subject: Grüße\r\n\r\nx\r\n'), /message header/);
    assert.match(
      await refusal(
        'Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Disposition: attachment; filename="ä.txt"\r\n\r\nx\r\n--b--\r\n',
      ),
      /MIME part header/,
    );
    assert.match(
      await refusal(
        'Content-Type: multipart/mixed; boundary=b\r\n\r\npréambule\r\n--b\r\n\r\nx\r\n--b--\r\n',
      ),
      /preamble or epilogue/,
    );
    assert.match(
      await refusal('Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nä\r\n'),
      /base64 part/,
    );
  });

  test('a part labelled 8bit or binary in 7-bit bytes: 7bit, or encoded when a line is too long', async () => {
    const long = 'Lorem ipsum '.repeat(166) + 'dolor'; // 1997 octets on one line
    for (const label of ['8bit', 'binary']) {
      const part = (type: string, body: string) =>
        `--b\r\nContent-Type: ${type}\r\nContent-Transfer-Encoding: ${label}\r\n\r\n${body}\r\n`;
      const message = Buffer.from(
        'From: a@x.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n' +
          part('text/plain', `short\r\n${long}\r\nend`) +
          part('application/octet-stream', long) +
          part('text/plain', 'just short lines\r\nend') +
          part('text/plain', 'a bare\nline feed') +
          '--b--\r\n',
      );
      const out = await converted(message);
      // RFC 5321 §4.5.3.1.6: 1000 octets on a line at most, with its CRLF
      for (const line of out.split('\r\n'))
        assert.ok(line.length <= 998, `${label}: a line of ${line.length}`);
      assert.deepEqual(await decodedParts(Buffer.from(out, 'latin1')), await decodedParts(message), label);
      assert.deepEqual(
        [...out.matchAll(/Content-Transfer-Encoding: (.*)\r\n/g)].map((m) => m[1]),
        ['quoted-printable', 'base64', '7bit', 'base64'],
        label,
      );
      assert.ok(out.includes('\r\n\r\njust short lines\r\nend\r\n'), 'a 7bit part stays byte for byte');
    }
  });

  test('property: every part decodes to what it was, in 7 bit', async () => {
    const line = fc
      .uint8Array({ maxLength: 120 })
      .map((a) => Buffer.from(a.filter((b) => b !== 0x0a && b !== 0x0d)));
    const body = fc
      .array(line, { maxLength: 6 })
      .map((ls) => Buffer.concat(ls.flatMap((l) => [l, Buffer.from('\r\n')])));
    const part = fc.record({
      type: fc.constantFrom('text/plain; charset=utf-8', 'application/octet-stream'),
      body,
    });
    await fc.assert(
      fc.asyncProperty(fc.array(part, { minLength: 1, maxLength: 4 }), async (parts) => {
        const message = Buffer.concat([
          Buffer.from(
            'From: a@x.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="=b="\r\n\r\n',
          ),
          ...parts.flatMap((p) => [
            Buffer.from(`--=b=\r\nContent-Type: ${p.type}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n`),
            p.body,
            Buffer.from('\r\n'),
          ]),
          Buffer.from('--=b=--\r\n'),
        ]);
        const out = Buffer.from(await converted(message), 'latin1');
        assert.deepEqual(await decodedParts(out), await decodedParts(message));
      }),
      { numRuns: 200 },
    );
  });
});
