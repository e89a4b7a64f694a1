import assert from 'node:assert/strict';
import { test } from 'node:test';
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
