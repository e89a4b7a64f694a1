import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { applyHeaderEdits, ownHeaderRemovals } from '../src/index.js';

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

test('our verdict and draft headers go from every message, in any case, folded too; others stay', () => {
  const msg = Buffer.from(
    'X-Mailyard-Virus-Scan: clean\r\n' +
      'x-mailyard-policy:\r\n inbox; no checks fired\r\n' +
      'X-MAILYARD-SPAM-SCAN: clean\r\n' +
      'X-Mailyard-Bulk: no\r\n' +
      'Authentication-Results: mx.example; dmarc=pass\r\n' +
      'X-Mailyard-Draft: yes\r\n' +
      'X-Mailyard-Origin: reply; uid=7; folder=SU5CT1g\r\n' +
      'X-Mailyard-Other: yes\r\n' +
      'Authentication-Results: other.example; dkim=pass\r\n' +
      'Subject: hi\r\n\r\nX-Mailyard-Virus-Scan: clean\r\n',
  );
  const out = applyHeaderEdits(msg, { headers: [], removeHeaders: ownHeaderRemovals('mx.example') });
  assert.equal(
    out.toString(),
    'X-Mailyard-Other: yes\r\n' +
      'Authentication-Results: other.example; dkim=pass\r\n' +
      'Subject: hi\r\n\r\nX-Mailyard-Virus-Scan: clean\r\n',
  );
});

test("a removal named twice (ours and the policy's) removes once; nothing to remove: the same message", () => {
  const removeHeaders = [
    ...ownHeaderRemovals('mx.example'),
    ...ownHeaderRemovals('mx.example'),
    { name: 'X-Spam' },
    { name: 'Authentication-Results', valuePrefix: 'policy.example' },
  ];
  const msg = Buffer.from(
    'Authentication-Results: policy.example; spf=pass\r\nX-Spam: No\r\n' +
      'Authentication-Results: mx.example; spf=pass\r\nSubject: hi\r\n\r\nbody\r\n',
  );
  assert.equal(
    applyHeaderEdits(msg, { headers: [], removeHeaders }).toString(),
    'Subject: hi\r\n\r\nbody\r\n',
  );
  const clean = Buffer.from('Subject: hi\r\n\r\nbody\r\n');
  assert.equal(applyHeaderEdits(clean, { headers: [], removeHeaders }), clean);
});
