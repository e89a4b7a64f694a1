import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  CommandFramer,
  decodeMutf7,
  encodeMutf7,
  formatRanges,
  formatSequence,
  headerLines,
  inRanges,
  MAX_LIST_DEPTH,
  missingRanges,
  parseCommand,
  parseCommandHead,
  ParseError,
  parseSequenceSet,
  readTag,
  resolveSequenceSet,
  sequenceSetOf,
} from '../src/index.js';

void describe('modified UTF-7', () => {
  void it('round-trips any folder name', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        // lone surrogates are not valid names; skip them
        if (/[\ud800-\udfff]/.test(s.replace(/[\ud800-\udbff][\udc00-\udfff]/g, ''))) return;
        const enc = encodeMutf7(s);
        assert.match(enc, /^[\x20-\x7e]*$/);
        assert.equal(decodeMutf7(enc), s);
      }),
    );
  });

  void it('matches RFC 3501 examples', () => {
    assert.equal(encodeMutf7('~peter/mail/台北/日本語'), '~peter/mail/&U,BTFw-/&ZeVnLIqe-');
    assert.equal(encodeMutf7('A&B'), 'A&-B');
    assert.equal(decodeMutf7('Entw&APw-rfe'), 'Entwürfe');
  });

  void it('rejects malformed input without crashing', () => {
    fc.assert(
      fc.property(fc.string(), (s) => {
        try {
          decodeMutf7(s);
        } catch (err) {
          assert.ok(err instanceof Error);
        }
      }),
    );
    for (const bad of ['&', '&Jjo', '&AGE-', '&AOQ-&AOQ-', '&U,BTF2XlZyyKng-x&-']) {
      if (bad === '&U,BTF2XlZyyKng-x&-') continue;
      assert.throws(() => decodeMutf7(bad), bad);
    }
  });
});

void describe('sequence sets', () => {
  const num = fc.integer({ min: 1, max: 500 });
  const elem = fc.oneof(
    num.map(String),
    fc.constant('*'),
    fc
      .tuple(fc.oneof(num.map(String), fc.constant('*')), fc.oneof(num.map(String), fc.constant('*')))
      .map(([a, b]) => `${a}:${b}`),
  );
  const set = fc.array(elem, { minLength: 1, maxLength: 8 }).map((a) => a.join(','));

  void it('resolves to exactly the numbers the set names', () => {
    fc.assert(
      fc.property(set, fc.integer({ min: 1, max: 600 }), (text, max) => {
        const ranges = resolveSequenceSet(parseSequenceSet(text), max);
        const expect = new Set<number>();
        for (const part of text.split(',')) {
          const [a, b = a] = part.split(':').map((x) => (x === '*' ? max : Number(x)));
          for (let n = Math.min(a!, b!); n <= Math.max(a!, b!); n++) expect.add(n);
        }
        for (let n = 1; n <= 600; n++)
          assert.equal(inRanges(n, ranges), expect.has(n), `${text} max=${max} n=${n}`);
      }),
    );
  });

  void it('formatSequence round-trips through the parser', () => {
    fc.assert(
      fc.property(fc.uniqueArray(num, { minLength: 1, maxLength: 50 }), (nums) => {
        const ranges = resolveSequenceSet(parseSequenceSet(formatSequence(nums)), 1000);
        for (let n = 1; n <= 500; n++) assert.equal(inRanges(n, ranges), nums.includes(n));
      }),
    );
  });

  void it('sequenceSetOf names exactly its numbers, as few sorted ranges', () => {
    fc.assert(
      fc.property(fc.array(num, { maxLength: 60 }), (nums) => {
        const set = sequenceSetOf(nums);
        const ranges = resolveSequenceSet(set, 1000);
        for (let n = 1; n <= 500; n++) assert.equal(inRanges(n, ranges), nums.includes(n));
        // already merged: `$` of a whole folder is one range, not one per message
        assert.equal(set.ranges.length, ranges.length);
      }),
    );
  });

  void it('missingRanges names exactly the numbers of the set that are absent', () => {
    fc.assert(
      fc.property(set, fc.uniqueArray(num, { maxLength: 60 }), (text, present) => {
        const within = resolveSequenceSet(parseSequenceSet(text), 500);
        const sorted = [...present].sort((a, b) => a - b);
        const missing = missingRanges(within, sorted);
        for (let n = 1; n <= 500; n++)
          assert.equal(inRanges(n, missing), inRanges(n, within) && !present.includes(n), `${text} n=${n}`);
        if (missing.length)
          assert.deepEqual(resolveSequenceSet(parseSequenceSet(formatRanges(missing)), 500), missing);
      }),
    );
  });

  void it('rejects garbage', () => {
    for (const bad of ['', '0', '1:', ':1', '1,,2', 'a', '1:2:3', '4294967296']) {
      assert.throws(() => parseSequenceSet(bad), bad);
    }
  });
});

void describe('command parser', () => {
  const atom = fc.stringMatching(/^[A-Za-z0-9.\-_]{1,10}$/);
  const quoted = fc.string({ maxLength: 20 }).filter((s) => !/[\r\n]/.test(s));
  const arg = fc.oneof(
    atom.map((v) => ({ text: v, t: 'atom' as const, v })),
    quoted.map((v) => ({ text: '"' + v.replace(/[\\"]/g, '\\$&') + '"', t: 'string' as const, v })),
  );

  void it('parses tag, name and arguments of any well-formed command', () => {
    fc.assert(
      fc.property(atom, atom, fc.array(arg, { maxLength: 6 }), (tag, name, args) => {
        const line = [tag, name, ...args.map((a) => a.text)].join(' ');
        const cmd = parseCommand({ lines: [line], literals: [] });
        assert.equal(cmd.tag, tag);
        assert.equal(cmd.name, name.toUpperCase() === 'UID' ? cmd.name : name.toUpperCase());
        if (name.toUpperCase() === 'UID') return;
        assert.equal(cmd.args.length, args.length);
        cmd.args.forEach((t, i) => {
          const a = args[i]!;
          if (a.t === 'atom') {
            if (a.v.toUpperCase() === 'NIL') assert.equal(t.t, 'nil');
            else assert.deepEqual(t, { t: 'atom', v: a.v });
          } else {
            assert.equal(t.t, 'string');
            assert.equal(t.t === 'string' && t.v.toString('utf8'), a.v);
          }
        });
      }),
    );
  });

  void it('never throws anything but ParseError on arbitrary input', () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 200 }),
        fc.array(fc.uint8Array({ maxLength: 20 }), { maxLength: 3 }),
        (line, lits) => {
          const lines = [line, ...lits.map(() => ')')];
          try {
            parseCommand({ lines, literals: lits.map((l) => Buffer.from(l)) });
          } catch (err) {
            assert.ok(err instanceof ParseError, String(err));
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  void it('refuses lists nested past MAX_LIST_DEPTH with a ParseError that carries the tag', () => {
    const ok = parseCommand({
      lines: [`a X ${'('.repeat(MAX_LIST_DEPTH)}${')'.repeat(MAX_LIST_DEPTH)}`],
      literals: [],
    });
    assert.equal(ok.args.length, 1);
    for (const depth of [MAX_LIST_DEPTH + 1, 10_000, 200_000]) {
      assert.throws(
        () => parseCommand({ lines: [`a1 FETCH 1 ${'('.repeat(depth)}${')'.repeat(depth)}`], literals: [] }),
        (err: unknown) => err instanceof ParseError && err.tag === 'a1',
      );
    }
  });

  void it('gives every ParseError the tag of a line that starts with one', () => {
    fc.assert(
      fc.property(atom, fc.string({ maxLength: 60 }), (tag, rest) => {
        for (const line of [tag, `${tag} ${rest}`]) {
          try {
            parseCommand({ lines: [line], literals: [] });
          } catch (err) {
            assert.ok(err instanceof ParseError && err.tag === tag, `${line}: ${String(err)}`);
          }
        }
      }),
      { numRuns: 2000 },
    );
    assert.equal(readTag('a+b NOOP'), null);
    assert.equal(readTag('\u00e9 NOOP'), null);
    assert.equal(readTag('x1'), 'x1');
  });

  void it('reads literals spliced into lists', () => {
    const cmd = parseCommand({ lines: ['a SEARCH (SUBJECT {3}', ' ALL)'], literals: [Buffer.from('f\0o')] });
    assert.deepEqual(cmd.args[0], {
      t: 'list',
      v: [
        { t: 'atom', v: 'SUBJECT' },
        { t: 'string', v: Buffer.from('f\0o'), literal: true },
        { t: 'atom', v: 'ALL' },
      ],
    });
  });
});

void describe('framer', () => {
  void it('splits any chunking of a byte stream into the same commands', () => {
    const stream = Buffer.from('a NOOP\r\nb APPEND INBOX {5}\r\nhello\r\nc LOGIN {1+}\r\nx y\r\n');
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: stream.length }), { maxLength: 10 }), (cuts) => {
        const f = new CommandFramer({ maxLine: 1000, maxLiteral: 100 });
        const points = [...new Set(cuts)].sort((x, y) => x - y);
        const events = [];
        let prev = 0;
        for (const c of [...points, stream.length]) {
          events.push(...f.push(stream.subarray(prev, c)));
          prev = c;
        }
        // the session answered the literal's announcement: framing goes on
        while (f.holding) events.push(...f.push(Buffer.alloc(0)));
        const cmds = events.filter((e) => e.type === 'command');
        assert.equal(cmds.length, 3);
        assert.equal(
          events.filter((e) => e.type === 'continue').length,
          1,
          'one + for the synchronising literal',
        );
        const b = cmds[1]!;
        assert.ok(b.type === 'command' && b.command.literals[0]!.toString() === 'hello');
      }),
    );
  });

  void it('refuses an announced literal above the limit without consuming it', () => {
    const f = new CommandFramer({ maxLine: 1000, maxLiteral: 10 });
    const ev = f.push(Buffer.from('t1 APPEND INBOX {11}\r\nt2 NOOP\r\n'));
    assert.deepEqual(ev[0], { type: 'error', reason: 'literal-too-large', tag: 't1', fatal: false });
    assert.equal(ev[1]?.type, 'command');
  });

  void it('refuses literals that add up past the limit in one command, however small each is', () => {
    const f = new CommandFramer({ maxLine: 1000, maxLiteral: 10 });
    const ev = f.push(
      Buffer.from('t1 SEARCH TEXT {6+}\r\nabcdef TEXT {6+}\r\nabcdef\r\nt2 X {4+}\r\nabcd\r\n'),
    );
    assert.deepEqual(ev[0], { type: 'error', reason: 'literal-too-large', tag: 't1', fatal: true });
    // a later command starts again from zero
    const ok = ev.find((e) => e.type === 'command' && e.command.lines[0]!.startsWith('t2'));
    assert.ok(ok, JSON.stringify(ev));
  });
});

void describe('framer: holding after each command', () => {
  void it('frames what follows a command only at the next push, under the limits then in force', () => {
    const f = new CommandFramer({ maxLine: 1000, maxLiteral: 10 });
    f.hold = true;
    const ev = f.push(Buffer.from('a LOGIN u p\r\nb APPEND INBOX {20+}\r\n' + 'x'.repeat(20) + '\r\n'));
    assert.deepEqual(
      ev.map((e) => e.type),
      ['command'],
    );
    assert.ok(f.held);
    f.append(Buffer.from('c NOOP\r\n'));
    f.hold = false;
    f.setLimits({ maxLine: 1000, maxLiteral: 100 });
    const rest = f.push(Buffer.alloc(0));
    assert.deepEqual(
      rest.map((e) => (e.type === 'command' ? e.command.lines[0]!.split(' ')[0] : e.type)),
      ['b', 'c'],
    );
    assert.ok(!f.held);
  });
});

void describe('framer: stopping where the input changes mode', () => {
  void it('stops after a command holdAfter names, and after a raw line', () => {
    const f = new CommandFramer({ maxLine: 1000, maxLiteral: 10 });
    f.holdAfter = (line) => / IDLE$/.test(line);
    const ev = f.push(Buffer.from('a NOOP\r\nb IDLE\r\nc NOOP {3}\r\nd NOOP\r\n'));
    assert.deepEqual(
      ev.map((e) => e.type === 'command' && e.command.lines[0]),
      ['a NOOP', 'b IDLE'],
    );
    assert.ok(f.holding);
    // IDLE ran: the next line is its end, read without literals
    f.raw = true;
    const done = f.push(Buffer.alloc(0));
    assert.deepEqual(
      done.map((e) => e.type === 'command' && e.command.lines),
      [['c NOOP {3}']],
    );
    assert.ok(f.holding);
    f.raw = false;
    const rest = f.push(Buffer.alloc(0));
    assert.deepEqual(
      rest.map((e) => e.type === 'command' && e.command.lines[0]),
      ['d NOOP'],
    );
    assert.ok(!f.holding);
  });
});

void describe('framer: a synchronising literal waits for the session', () => {
  void it('stops at the announcement with the command so far, and reads on once accepted', () => {
    const f = new CommandFramer({ maxLine: 1000, maxLiteral: 100 });
    const ev = f.push(Buffer.from('a APPEND {6}\r\nfolder (\\Seen) {5}\r\nhello\r\n'));
    assert.deepEqual(ev, [{ type: 'continue', size: 6, command: { lines: ['a APPEND {6}'], literals: [] } }]);
    assert.ok(f.holding);
    const next = f.push(Buffer.alloc(0));
    assert.deepEqual(next, [
      {
        type: 'continue',
        size: 5,
        command: { lines: ['a APPEND {6}', ' (\\Seen) {5}'], literals: [Buffer.from('folder')] },
      },
    ]);
    const cmd = f.push(Buffer.alloc(0));
    assert.equal(cmd[0]?.type, 'command');
    assert.ok(!f.holding);
  });

  void it('reads the next line as a command once the session refused the literal', () => {
    const f = new CommandFramer({ maxLine: 1000, maxLiteral: 100 });
    assert.equal(f.push(Buffer.from('a APPEND nosuch {5}\r\n'))[0]?.type, 'continue');
    f.dropCommand();
    const ev = f.push(Buffer.from('b NOOP\r\n'));
    assert.deepEqual(ev, [{ type: 'command', command: { lines: ['b NOOP'], literals: [] } }]);
  });

  void it('parses the arguments complete before the literal announced', () => {
    const head = (lines: string[], literals: string[] = []) =>
      parseCommandHead({ lines, literals: literals.map((l) => Buffer.from(l)) });
    const atoms = (lines: string[], literals?: string[]) =>
      head(lines, literals)?.args.map((t) =>
        t.t === 'string' ? t.v.toString() : t.t === 'atom' ? t.v : t.t,
      );
    assert.deepEqual(atoms(['a APPEND nosuch (\\Seen) "06-Jan-2025 10:00:00 +0000" {5}']), [
      'nosuch',
      'list',
      '06-Jan-2025 10:00:00 +0000',
    ]);
    assert.deepEqual(atoms(['a APPEND {6}']), []);
    assert.deepEqual(atoms(['a APPEND {6}', ' {5}'], ['folder']), ['folder']);
    // a list the literal is in is not complete
    assert.deepEqual(atoms(['a APPEND box CATENATE (TEXT {5}']), ['box', 'CATENATE']);
    assert.equal(head(['{5}']), null);
    assert.equal(head(['a APPEND {5}'])?.name, 'APPEND');
  });
});

void describe('framer: a command as a whole', () => {
  void it('ends a command whose lines add up past maxLine, though each line and literal is small', () => {
    const f = new CommandFramer({ maxLine: 1000, maxLiteral: 10 });
    const line = `t1 SEARCH TEXT ${'x'.repeat(300)} {0+}\r\n`;
    const ev = f.push(Buffer.from(line.repeat(4) + 't2 NOOP\r\n'));
    assert.deepEqual(ev[0], { type: 'error', reason: 'command-too-long', tag: 't1', fatal: true });
  });

  void it('counts from zero again at each command', () => {
    const f = new CommandFramer({ maxLine: 1000, maxLiteral: 10 });
    const ev = f.push(Buffer.from(`t1 NOOP ${'x'.repeat(900)}\r\n`.repeat(5)));
    assert.deepEqual(
      ev.map((e) => e.type),
      ['command', 'command', 'command', 'command', 'command'],
    );
  });
});

void describe('headerLines (HEADER.FIELDS)', () => {
  /** The plain statement of what it does: split into lines, keep fields and their folding. */
  const reference = (text: string, names: string[]) => {
    let out = '';
    let kept = false;
    for (const line of text.split(/(?<=\n)/)) {
      if (line === '\r\n' || line === '\n') break;
      if (line[0] === ' ' || line[0] === '\t') {
        if (kept) out += line;
        continue;
      }
      kept = names.includes(line.slice(0, line.indexOf(':')).trim().toLowerCase());
      if (kept) out += line;
    }
    return out;
  };
  const line = fc.oneof(
    fc.constantFrom(
      'Subject: a',
      'To: b',
      'X-Priority: 1',
      'subject : c',
      '\tfolded',
      '  more',
      'no colon',
      '',
    ),
    fc.string({ maxLength: 12 }),
  );
  const header = fc
    .tuple(fc.array(fc.tuple(line, fc.constantFrom('\r\n', '\n')), { maxLength: 12 }), fc.boolean())
    .map(([ls, tail]) => ls.map(([l, nl]) => l + nl).join('') + (tail ? 'Subject: no newline' : ''));

  void it('keeps exactly the lines of the named fields, folding and line ends included, up to the empty line', () => {
    fc.assert(
      fc.property(header, fc.subarray(['subject', 'to', 'x-priority', 'no colo']), (text, names) => {
        assert.equal(
          headerLines(text, (n) => names.includes(n)),
          reference(text, names),
        );
      }),
      { numRuns: 2000 },
    );
  });

  void it('on a real header', () => {
    const text = 'Received: x\r\n y\r\nSubject: a\r\n\tb\r\nTo: c\r\n\r\nTo: body\r\n';
    assert.equal(
      headerLines(text, (n) => n === 'subject' || n === 'to'),
      'Subject: a\r\n\tb\r\nTo: c\r\n',
    );
  });
});

void describe('framer input a byte at a time', () => {
  // a byte per TLS record: each one a read of its own, however the client's packets arrive
  void it(
    'frames a megabyte line sent a byte at a time as fast as one sent at once',
    { timeout: 30_000 },
    async () => {
      const f = new CommandFramer({ maxLine: 1 << 20, maxLiteral: 100 });
      const byte = Buffer.from('x');
      const events = f.push(Buffer.from('a SEARCH TEXT '));
      for (let i = 0; i < 1_000_000; i++) {
        events.push(...f.push(byte));
        // the test's timeout can end it meanwhile
        if (i % 10_000 === 0) await new Promise((r) => setImmediate(r));
      }
      events.push(...f.push(Buffer.from('\r\nb NOOP\r\n')));
      assert.deepEqual(
        events.map((e) => (e.type === 'command' ? e.command.lines[0]!.length : e.type)),
        [14 + 1_000_000, 6],
      );
    },
  );
});
