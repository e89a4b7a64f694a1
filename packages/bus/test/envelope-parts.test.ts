// How recipients are cut into envelopes that each fit in one message's headers.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_ENVELOPE_RECIPIENT_BYTES, envelopeAddressBytes, envelopeParts } from '../src/index.js';

const bytes = (part: string[]) => part.reduce((sum, r) => sum + envelopeAddressBytes(r), 0);

test('recipients are cut in their order into parts within the room, each part as full as it can be', () => {
  const rcpts = Array.from({ length: 3000 }, (_, i) => `user-${i}@example${i % 7}.test`);
  const parts = envelopeParts(rcpts);
  assert.ok(parts.length > 1);
  assert.deepEqual(parts.flat(), rcpts);
  for (const [i, part] of parts.entries()) {
    assert.ok(bytes(part) <= MAX_ENVELOPE_RECIPIENT_BYTES);
    const next = parts[i + 1]?.[0];
    if (next) assert.ok(bytes(part) + envelopeAddressBytes(next) > MAX_ENVELOPE_RECIPIENT_BYTES);
  }
  // a list the room takes exactly is one part (quotes and comma: 3 bytes); none, no part
  const exact = `${'a'.repeat(MAX_ENVELOPE_RECIPIENT_BYTES - 3 - 7)}@b.test`;
  assert.equal(envelopeAddressBytes(exact), MAX_ENVELOPE_RECIPIENT_BYTES);
  assert.deepEqual(envelopeParts([exact]), [[exact]]);
  assert.deepEqual(envelopeParts([exact, 'c@d.test']), [[exact], ['c@d.test']]);
  assert.deepEqual(envelopeParts([]), []);
});
