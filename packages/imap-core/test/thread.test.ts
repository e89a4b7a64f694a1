import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  baseSubject,
  casemap,
  extractSubject,
  messageReferences,
  parseMsgIds,
  renderThreads,
  threadOrderedSubject,
  threadReferences,
  threadRefs,
  type ThreadMessage,
  type ThreadNode,
} from '../src/index.js';

interface Spec {
  id?: string;
  refs?: string;
  irt?: string;
  subject?: string;
  date?: number;
}

/** Messages numbered 1.. in the given order; dates default to that order. */
function msgs(...specs: Spec[]): ThreadMessage[] {
  return specs.map((s, i) => ({
    n: i + 1,
    messageId: s.id ?? null,
    references: s.refs ?? null,
    inReplyTo: s.irt ?? null,
    subject: s.subject ?? `subject ${i + 1}`,
    date: s.date ?? (i + 1) * 1000,
  }));
}

const refs = (...specs: Spec[]) => renderThreads(threadReferences(msgs(...specs)));
const ordered = (...specs: Spec[]) => renderThreads(threadOrderedSubject(msgs(...specs)));
const refs2 = (...specs: Spec[]) => renderThreads(threadRefs(msgs(...specs)));

void describe('base subject (RFC 5256 §2.1)', () => {
  // written lower-case here; compared in i;unicode-casemap form
  const cases: [string, string, boolean][] = [
    ['Hello', 'hello', false],
    ['Re: Hello', 'hello', true],
    ['RE:Hello', 'hello', true],
    ['Re : Hello', 'hello', true],
    ['Fwd: Hello', 'hello', true],
    ['Fw: Hello', 'hello', true],
    ['Re[2]: Hello', 'hello', true],
    ['Re: Re: Fwd: Hello', 'hello', true],
    ['[list] Re: Hello', 'hello', true],
    ['Re: [list] Hello', 'hello', true],
    ['[a] [b] Hello', 'hello', false],
    ['[only a blob]', '[only a blob]', false],
    ['[a] [b]', '[b]', false],
    ['Hello (fwd)', 'hello', true],
    ['Hello (FWD) (fwd)  ', 'hello', true],
    ['[Fwd: Re: Hello]', 'hello', true],
    ['[fwd: [fwd: Hello (fwd)]]', 'hello', true],
    ['  Hello \t  world  ', 'hello world', false],
    ['=?utf-8?q?Re=3A_Gr=C3=BC=C3=9Fe?=', 'grüße', true],
    // not in the grammar: kept, so every server sorts the same way
    ['AW: Hallo', 'aw: hallo', false],
    ['Really: no', 'really: no', false],
    ['', '', false],
  ];
  for (const [raw, base, isReply] of cases) {
    void it(JSON.stringify(raw), () => {
      assert.deepEqual(extractSubject(raw), { base: casemap(base), isReply });
      assert.equal(baseSubject(raw), casemap(base));
    });
  }
});

void describe('msg-id parsing', () => {
  void it('keeps valid ids in order, skips comments, phrases and ids without @', () => {
    assert.deepEqual(parseMsgIds('<a@x> (comment <c@x>) <b@y>\t<bad> junk <d @ z>'), [
      '<a@x>',
      '<b@y>',
      '<d@z>',
    ]);
    assert.deepEqual(parseMsgIds(null), []);
  });

  void it('falls back to the first valid In-Reply-To id without valid References', () => {
    assert.deepEqual(messageReferences({ references: '<a@x> <b@x>', inReplyTo: '<c@x>' }), [
      '<a@x>',
      '<b@x>',
    ]);
    assert.deepEqual(messageReferences({ references: 'garbage', inReplyTo: 'phrase <c@x> <d@x>' }), [
      '<c@x>',
    ]);
    assert.deepEqual(messageReferences({ references: null, inReplyTo: null }), []);
  });
});

void describe('THREAD=REFERENCES (RFC 5256 §3)', () => {
  void it('nests replies and sorts siblings by sent date', () => {
    assert.equal(
      refs(
        { id: '<a@x>' },
        { id: '<b@x>', refs: '<a@x>' },
        { id: '<c@x>', refs: '<a@x> <b@x>' },
        { id: '<d@x>', irt: '<a@x>' },
        { id: '<e@x>' },
      ),
      '(1 (2 3)(4))(5)',
    );
  });

  void it('renders the RFC 5256 §4 example shape', () => {
    const t: ThreadNode[] = [
      { n: 2, children: [] },
      {
        n: 3,
        children: [
          {
            n: 6,
            children: [
              { n: 4, children: [{ n: 23, children: [] }] },
              { n: 44, children: [{ n: 7, children: [{ n: 96, children: [] }] }] },
            ],
          },
        ],
      },
    ];
    assert.equal(renderThreads(t), '(2)(3 6 (4 23)(44 7 96))');
    assert.equal(renderThreads([]), '');
  });

  void it('keeps a dummy for a missing parent at the top level when it has several children', () => {
    assert.equal(refs({ id: '<b@x>', refs: '<gone@x>' }, { id: '<c@x>', refs: '<gone@x>' }), '((1)(2))');
  });

  void it('promotes the only child of a missing parent to the top level', () => {
    assert.equal(refs({ id: '<b@x>', refs: '<gone@x>' }, { id: '<c@x>' }), '(1)(2)');
  });

  void it('drops a missing message in the middle of a chain', () => {
    assert.equal(refs({ id: '<a@x>' }, { id: '<c@x>', refs: '<a@x> <gone@x>' }), '(1 2)');
    // two replies to the missing middle message become siblings under the first
    assert.equal(
      refs({ id: '<a@x>' }, { id: '<c@x>', refs: '<a@x> <gone@x>' }, { id: '<d@x>', refs: '<a@x> <gone@x>' }),
      '(1 (2)(3))',
    );
  });

  void it('sorts a top-level dummy by its earliest child', () => {
    assert.equal(
      refs(
        { id: '<b@x>', refs: '<gone@x>', date: 5000 },
        { id: '<z@x>', date: 3000 },
        { id: '<c@x>', refs: '<gone@x>', date: 1000 },
      ),
      '((3)(1))(2)',
    );
  });

  void it('gives a duplicate Message-ID to the first message only', () => {
    assert.equal(refs({ id: '<a@x>' }, { id: '<a@x>' }, { id: '<b@x>', refs: '<a@x>' }), '(1 3)(2)');
  });

  void it('fills a dummy when the referenced message comes later', () => {
    assert.equal(refs({ id: '<b@x>', refs: '<a@x>', date: 2000 }, { id: '<a@x>', date: 1000 }), '(2 1)');
  });

  void it('threads messages without a Message-ID on their own', () => {
    assert.equal(refs({}, { refs: '<nothing@x>' }, { id: 'not-an-id' }), '(1)(2)(3)');
    // but they can still be replies
    assert.equal(refs({ id: '<a@x>' }, { refs: '<a@x>' }), '(1 2)');
  });

  void it('refuses links that would make a loop', () => {
    // A says it replies to B, B says it replies to A: the first link wins
    assert.equal(refs({ id: '<a@x>', refs: '<b@x>' }, { id: '<b@x>', refs: '<a@x>' }), '(2 1)');
    // a message that refers to itself
    assert.equal(refs({ id: '<a@x>', refs: '<a@x>' }), '(1)');
    // a References list that loops: a -> b is linked, b -> a is not, a is the parent
    assert.equal(
      refs({ id: '<a@x>' }, { id: '<b@x>' }, { id: '<c@x>', refs: '<a@x> <b@x> <a@x>' }),
      '(1 (2)(3))',
    );
  });

  void it("lets a message's own references replace a link from truncated References", () => {
    // C's References (truncated) made B a child of A; B itself says it replies to X
    assert.equal(
      refs(
        { id: '<x@x>' },
        { id: '<a@x>' },
        { id: '<c@x>', refs: '<a@x> <b@x>' },
        { id: '<b@x>', refs: '<x@x>' },
      ),
      '(1 4 3)(2)',
    );
    // and a message without references loses the parent others gave it
    assert.equal(refs({ id: '<a@x>' }, { id: '<c@x>', refs: '<a@x> <b@x>' }, { id: '<b@x>' }), '(1)(3 2)');
  });

  void it('drops the parent others gave a message even when its own link would loop', () => {
    // RFC 5256 §3 (1B): B's old parent (A, from C's References) goes; B's own reference
    // (C) is its descendant, so B ends without a parent (Dovecot builds the same tree)
    assert.equal(
      refs(
        { id: '<c@x>', refs: '<a@x> <b@x>', subject: 'x' },
        { id: '<b@x>', refs: '<a@x> <c@x>', subject: 'y' },
        { id: '<d@x>', refs: '<b@x> <e@x> <a@x>', irt: '<c@x>', subject: 'z' },
      ),
      '(2 (1)(3))',
    );
    // a References list that ends with the message's own id leaves it on its own
    assert.equal(
      refs(
        { id: '<d@x>', refs: '<a@x> <b@x> <d@x>', irt: '<c@x>', subject: 'x', date: 1 },
        { id: '<e@x>', irt: '<a@x>', subject: 'y', date: 5 },
        { id: '<c@x>', subject: 'z', date: 4 },
      ),
      '(1)(3)(2)',
    );
  });

  void it('puts a reply with the same base subject under the original', () => {
    assert.equal(refs({ id: '<a@x>', subject: 'Lunch' }, { id: '<b@x>', subject: 'Re: lunch' }), '(1 2)');
    // also when the reply is older than the original
    assert.equal(
      refs({ id: '<a@x>', subject: 'Re: Lunch', date: 1000 }, { id: '<b@x>', subject: 'Lunch', date: 2000 }),
      '(2 1)',
    );
  });

  void it('puts two originals with the same subject under a new dummy', () => {
    assert.equal(
      refs(
        { id: '<a@x>', subject: 'Lunch' },
        { id: '<b@x>', subject: 'lunch' },
        { id: '<c@x>', subject: 'Re: Lunch' },
        { id: '<d@x>', subject: 'other' },
      ),
      '((1)(2)(3))(4)',
    );
  });

  void it('joins threads under a dummy that shares their subject', () => {
    assert.equal(
      refs(
        { id: '<b@x>', refs: '<gone@x>', subject: 'Re: plan' },
        { id: '<c@x>', refs: '<gone@x>', subject: 'Re: plan' },
        { id: '<d@x>', subject: 'Plan' },
        { id: '<e@x>', refs: '<gone2@x>', subject: 'Re: plan' },
        { id: '<f@x>', refs: '<gone2@x>', subject: 'Re: plan' },
      ),
      '((1)(2)(3)(4)(5))',
    );
  });

  void it('does not group messages with an empty subject', () => {
    assert.equal(refs({ id: '<a@x>', subject: '' }, { id: '<b@x>', subject: 'Re:' }), '(1)(2)');
  });

  void it('breaks date ties by sequence number', () => {
    assert.equal(
      refs(
        { id: '<a@x>', date: 0 },
        { id: '<b@x>', refs: '<a@x>', date: 5 },
        { id: '<c@x>', refs: '<a@x>', date: 5 },
        { id: '<d@x>', refs: '<a@x>', date: 1 },
      ),
      '(1 (4)(2)(3))',
    );
  });

  void it('reports every message exactly once, whatever the headers', () => {
    const id = fc.constantFrom('<a@x>', '<b@x>', '<c@x>', '<d@x>', '<e@x>', 'junk');
    const spec = fc.record({
      id: fc.option(id, { nil: undefined }),
      refs: fc.option(
        fc.array(id, { maxLength: 4 }).map((a) => a.join(' ')),
        { nil: undefined },
      ),
      irt: fc.option(id, { nil: undefined }),
      subject: fc.constantFrom('x', 'Re: x', 'y', '[fwd: x]', ''),
      date: fc.integer({ min: 0, max: 5 }),
    });
    fc.assert(
      fc.property(fc.array(spec, { maxLength: 12 }), (specs) => {
        for (const out of [refs(...specs), refs2(...specs), ordered(...specs)]) {
          const nums = (out.match(/\d+/g) ?? []).map(Number).sort((a, b) => a - b);
          assert.deepEqual(
            nums,
            specs.map((_s, i) => i + 1),
          );
          // balanced, and no empty lists
          assert.doesNotMatch(out, /\(\)/);
          let depth = 0;
          for (const ch of out) {
            depth += ch === '(' ? 1 : ch === ')' ? -1 : 0;
            assert.ok(depth >= 0);
          }
          assert.equal(depth, 0);
        }
      }),
    );
  });
});

void describe('THREAD=ORDEREDSUBJECT (RFC 5256 §3)', () => {
  void it('groups by base subject under the earliest message, threads by their first date', () => {
    assert.equal(
      ordered(
        { subject: 'B', date: 2000 },
        { subject: 'A', date: 1000 },
        { subject: 'Re: A', date: 3000 },
        { subject: 'Re: B', date: 4000 },
        { subject: 'A (fwd)', date: 5000 },
        { subject: 'C', date: 6000 },
      ),
      '(2 (3)(5))(1 4)(6)',
    );
  });
});

void describe('THREAD=REFS (draft-ietf-morg-inthread)', () => {
  void it('does not gather threads by subject', () => {
    const specs: Spec[] = [
      { id: '<b@x>', refs: '<m@x>', subject: 'Re: same', date: 2 },
      { id: '<c@x>', refs: '<m@x>', subject: 'Re: same', date: 3 },
      { id: '<d@x>', subject: 'same', date: 1 },
    ];
    assert.equal(refs(...specs), '((3)(1)(2))');
    assert.equal(refs2(...specs), '(3)((1)(2))');
  });

  void it('orders threads by their most recent message', () => {
    // the thread of 1 began first but 3 is its latest; the lone 2 came in between
    assert.equal(
      refs2({ id: '<a@x>', date: 1 }, { id: '<b@x>', date: 2 }, { id: '<c@x>', refs: '<a@x>', date: 3 }),
      '(2)(1 3)',
    );
    assert.equal(
      refs2(
        { id: '<a@x>', subject: 's', date: 5 },
        { id: '<b@x>', refs: '<a@x>', subject: 'Re: s', date: 1 },
        { id: '<c@x>', refs: '<zz@x>', irt: '<a@x>', subject: 'Re: s', date: 3 },
      ),
      '(3)(1 2)',
    );
  });

  void it('sorts siblings by sent date, as REFERENCES does', () => {
    assert.equal(
      refs2(
        { id: '<b@x>', refs: '<m@x>', date: 2 },
        { id: '<c@x>', refs: '<m@x>', date: 3 },
        { id: '<d@x>', irt: '<m@x>', date: 1 },
        { id: '<e@x>', date: 4 },
      ),
      '((3)(1)(2))(4)',
    );
  });

  void it('puts a thread whose head is missing first when the latest dates tie', () => {
    assert.equal(
      refs2(
        { id: '<a@x>', date: 4 },
        { id: '<b@x>', refs: '<a@x>', date: 5 },
        { id: '<c@x>', refs: '<gone@x>', date: 5 },
      ),
      '(3)(1 2)',
    );
  });
});
