import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { casemap, compareOctets } from '../src/index.js';

void describe('i;unicode-casemap (RFC 5051)', () => {
  void it('titlecases and decomposes', () => {
    assert.equal(casemap('apple'), 'APPLE');
    assert.equal(casemap('é'), 'E\u0301');
    assert.equal(casemap('e\u0301'), 'E\u0301');
    assert.equal(casemap('ſa'), 'SA');
    // no single-character titlecase: kept
    assert.equal(casemap('ß'), 'ß');
    // a compatibility decomposition
    assert.equal(casemap('ﬁx'), 'fiX');
    assert.equal(casemap('ǆ'), casemap('Ǆ'));
    assert.equal(casemap('ǅ'), casemap('Ǆ'));
    assert.equal(casemap('ǈ'), casemap('ǉ'));
    // Hangul syllables stay whole
    assert.equal(casemap('한'), '한');
  });

  void it('orders as Dovecot does', () => {
    // SORT (SUBJECT) of these subjects on Dovecot 2.3: "_" and "[" sort after letters
    const subjects = [
      'fjx',
      'ﬁx',
      'fix',
      'ßa',
      'ssb',
      'Ω',
      'é',
      'e\u0301a',
      'Zz',
      'ſa',
      'sb',
      'ﬀ',
      'ffa',
      '_x',
      '[t]',
    ];
    const sorted = [...subjects].sort((a, b) => compareOctets(casemap(a), casemap(b)));
    assert.deepEqual(sorted, [
      'é',
      'e\u0301a',
      'ffa',
      'fix',
      'fjx',
      'ſa',
      'sb',
      'ssb',
      'Zz',
      '[t]',
      '_x',
      'ﬀ',
      'ﬁx',
      'ßa',
      'Ω',
    ]);
  });

  void it('compares as UTF-8 octets do', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), fc.string({ unit: 'grapheme' }), (a, b) => {
        const bytes = Buffer.compare(Buffer.from(a), Buffer.from(b));
        assert.equal(Math.sign(compareOctets(a, b)), bytes);
      }),
    );
  });
});
