// How a text part's bytes become text when its label does not say (decodeTextPart).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeTextPart } from '../src/message-view.js';

test('UTF-8 cut in the middle of a character, as a part at the size limit is: still UTF-8', () => {
  const text = 'Grüße aus Köln – ';
  const whole = Buffer.from(text + '€', 'utf8');
  // the euro sign is three bytes; the download stops after the first or the second
  for (const cut of [whole.length - 2, whole.length - 1]) {
    assert.equal(decodeTextPart(whole.subarray(0, cut), undefined, false), text, `cut at ${cut}`);
  }
});

test('bytes that are no UTF-8 before their last character: windows-1252', () => {
  const latin = Buffer.from([0x43, 0x61, 0x66, 0xe9, 0x20, 0x80, 0x20, 0xe2, 0x82]);
  assert.equal(decodeTextPart(latin, undefined, false), 'Café € â‚');
});
