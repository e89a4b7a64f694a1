import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { applyHeaderEdits } from '../src/index.js';

test('removes our forged Authentication-Results (folded too), keeps others, prepends ours', () => {
  const msg = Buffer.from(
    'Authentication-Results: mx.example;\r\n spf=pass\r\n' +
      'Authentication-Results: mx.example.org; dkim=pass\r\n' +
      'Authentication-Results: other.example; dkim=pass\r\n' +
      'Subject: hi\r\n\r\nAuthentication-Results: mx.example; in the body stays\r\n',
  );
  const out = applyHeaderEdits(msg, {
    headers: [{ name: 'Authentication-Results', value: 'mx.example; spf=fail' }],
    removeHeaders: [{ name: 'authentication-results', valuePrefix: 'mx.example' }],
  }).toString();
  assert.equal(
    out,
    'Authentication-Results: mx.example; spf=fail\r\n' +
      'Authentication-Results: mx.example.org; dkim=pass\r\n' +
      'Authentication-Results: other.example; dkim=pass\r\n' +
      'Subject: hi\r\n\r\nAuthentication-Results: mx.example; in the body stays\r\n',
  );
});

test('our authserv-id behind a comment, quoted, or in another case is ours too', () => {
  // RFC 8601 §2.2: [CFWS] authserv-id, a token or a quoted-string; a reader that parses
  // the field so takes each of these for a result of mx.example
  const forged = [
    '(trust me) mx.example; dkim=pass',
    '(nested (comment)) MX.Example; dkim=pass',
    '"mx.example"; dmarc=pass',
    '"mx\\.example" 1; spf=pass',
    'mx.example(comment); dkim=pass',
    'mx.example',
  ];
  const kept = [
    'mx.example.org; dkim=pass',
    '(mx.example) other.example; dkim=pass',
    '"mx.example.org"; dkim=pass',
    '(unclosed mx.example; dkim=pass',
  ];
  const msg = Buffer.from(
    [...forged, ...kept].map((v) => `Authentication-Results: ${v}\r\n`).join('') +
      'Subject: hi\r\n\r\nbody\r\n',
  );
  const out = applyHeaderEdits(msg, {
    headers: [],
    removeHeaders: [{ name: 'Authentication-Results', valuePrefix: 'mx.example' }],
  }).toString();
  assert.equal(
    out,
    kept.map((v) => `Authentication-Results: ${v}\r\n`).join('') + 'Subject: hi\r\n\r\nbody\r\n',
  );
});

test('any comments in front, any case, quoted or not: our id is removed, another kept', () => {
  const edits = {
    headers: [],
    removeHeaders: [{ name: 'Authentication-Results', valuePrefix: 'mx.example' }],
  };
  const commentText = fc.stringMatching(/^[ -~]{0,12}$/).map((t) => t.replace(/[()\\]/g, '\\$&'));
  const comments = fc
    .array(
      commentText.map((t) => `(${t})`),
      { maxLength: 3 },
    )
    .map((c) => c.join(' '));
  const cased = (id: string) =>
    fc
      .array(fc.boolean(), { minLength: id.length, maxLength: id.length })
      .map((up) => [...id].map((ch, i) => (up[i] ? ch.toUpperCase() : ch)).join(''));
  const field = (front: string, id: string, quoted: boolean) =>
    Buffer.from(
      `Authentication-Results: ${front} ${quoted ? `"${id}"` : id}; dkim=pass\r\nSubject: x\r\n\r\nbody\r\n`,
    );
  fc.assert(
    fc.property(comments, cased('mx.example'), fc.boolean(), (front, id, quoted) => {
      assert.equal(
        applyHeaderEdits(field(front, id, quoted), edits).toString(),
        'Subject: x\r\n\r\nbody\r\n',
      );
    }),
  );
  const other = fc.stringMatching(/^[a-z0-9][a-z0-9.-]{0,20}$/).filter((d) => d !== 'mx.example');
  fc.assert(
    fc.property(comments, other, fc.boolean(), (front, id, quoted) => {
      const msg = field(front, id, quoted);
      assert.equal(applyHeaderEdits(msg, edits).toString(), msg.toString());
    }),
  );
});
