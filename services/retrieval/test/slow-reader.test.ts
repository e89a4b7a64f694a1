// A client reading a large FETCH or RETR over a slow link is active as long as it reads:
// the autologout timers (RFC 9051 §5.4, RFC 1939 §3) restart as the answer is drained, as
// Dovecot counts output as activity, not only on the client's input.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, startRetrieval, type Retrieval } from './helpers.js';
import { RawImap } from './raw-imap.js';

const run = promisify(execFile);
const USER = 'slow-reader@example.test';
const AUTOLOGOUT_MS = 5000;
/** The reader's pace, in bytes a second. */
const RATE = 2 << 20;
/**
 * Read in twice the autologout and more at that pace; what the kernel holds for the client
 * once the server has handed it the last byte (a few MB on loopback), which the server
 * cannot see, is read well within one.
 */
const BODY_BYTES = 24 << 20;

let p: Platform;
let r: Retrieval;
before(async () => {
  p = await startPlatform({ withDelivery: false });
  await addAccount(p.directory, USER);
  r = await startRetrieval(p, {
    imap_autologout: `${AUTOLOGOUT_MS}ms`,
    pop3_autologout: `${AUTOLOGOUT_MS}ms`,
    message_size_limit: BODY_BYTES + (BODY_BYTES >> 1),
  });
  const body = randomBytes((BODY_BYTES / 4) * 3)
    .toString('base64')
    .replace(/.{76}/g, '$&\r\n');
  const msg = Buffer.from(
    ['From: a@remote.example', 'Subject: large', 'Content-Transfer-Encoding: base64', '', body, ''].join(
      '\r\n',
    ),
  );
  const c = await RawImap.loggedIn(r.ports.imap, USER, PASSWORD);
  c.send(`a APPEND INBOX {${msg.length}}\r\n`);
  await c.until(/^\+/m);
  c.send(Buffer.concat([msg, Buffer.from('\r\n')]));
  await c.until(/^a OK/m, 30_000);
  c.close();
});
after(async () => {
  await r?.stop();
  await p?.close();
});

// A small receive buffer (so that the kernel does not take the answer for the client) and
// reads paced to RATE: a slow link. paced() reads `size` bytes at a time until done(the
// last bytes read) holds or the server closes, and says what it read and how long it took.
const SLOW_LINK = `
import json, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.connect(('127.0.0.1', int(sys.argv[1])))
def paced(done, size):
    start = time.monotonic()
    got = 0
    tail = b''
    while not done(tail):
        d = s.recv(size)
        if not d: break
        got += len(d)
        tail = (tail + d)[-400:]
        ahead = start + got / int(sys.argv[4]) - time.monotonic()
        if ahead > 0: time.sleep(ahead)
    return {'got': got, 'seconds': time.monotonic() - start, 'tail': tail[-200:].decode('latin1')}
`;

/** What a slow reader read, in how long, its last bytes, and the answer to a command after. */
interface SlowRead {
  got: number;
  seconds: number;
  tail: string;
  after: string;
}

/** Runs `script` on a SLOW_LINK to `port`, as USER; it prints paced()'s result with `after`. */
async function readSlowly(script: string, port: number): Promise<SlowRead> {
  const { stdout } = await run(
    'python3',
    ['-c', SLOW_LINK + script, String(port), USER, PASSWORD, String(RATE)],
    { timeout: 100_000 },
  );
  return JSON.parse(stdout) as SlowRead;
}

const SLOW_IMAP = `
buf = b''
def until(tag):
    global buf
    while (b'\\r\\n' + tag + b' ') not in (b'\\r\\n' + buf):
        d = s.recv(65536)
        if not d: raise SystemExit('closed: ' + buf[-300:].decode('latin1'))
        buf += d
    out, buf = buf, b''
    return out.decode('latin1')
until(b'*')
s.sendall(('l LOGIN %s "%s"\\r\\n' % (sys.argv[2], sys.argv[3])).encode())
until(b'l')
s.sendall(b's SELECT INBOX\\r\\n')
until(b's')
s.sendall(b'f FETCH 1 BODY.PEEK[]\\r\\n')
res = paced(lambda tail: b'\\r\\nf ' in tail, 65536)
s.sendall(b'n NOOP\\r\\n')
after = ''
try:
    after = until(b'n')
except SystemExit:
    pass
print(json.dumps(dict(res, after=after)))
`;

test(
  'a slow client reading a large FETCH is not logged out while it reads',
  { timeout: 120_000 },
  async () => {
    const res = await readSlowly(SLOW_IMAP, r.ports.imap);
    // the whole answer, and no BYE, though reading it took longer than the autologout
    assert.match(res.tail, /\)\r\nf OK /, `read ${res.got} bytes in ${res.seconds} s: ${res.tail}`);
    assert.doesNotMatch(res.tail, /\* BYE/, res.tail);
    assert.ok(res.got > BODY_BYTES, `${res.got} bytes read`);
    assert.ok(res.seconds * 1000 > 2 * AUTOLOGOUT_MS, `read in ${res.seconds} s`);
    // and the session goes on
    assert.match(res.after, /^n OK /m, res.after);
  },
);

// The same over POP3, a few KB at a time: a RETR is sent as it is read.
const SLOW_POP3 = `
def line():
    b = b''
    while not b.endswith(b'\\r\\n'):
        d = s.recv(1)
        if not d: raise SystemExit('closed: ' + b.decode('latin1'))
        b += d
    return b.decode('latin1')
line()
s.sendall(('USER %s\\r\\nPASS %s\\r\\n' % (sys.argv[2], sys.argv[3])).encode())
line(); line()
s.sendall(b'RETR 1\\r\\n')
res = paced(lambda tail: tail.endswith(b'\\r\\n.\\r\\n'), 8192)
after = ''
try:
    s.sendall(b'NOOP\\r\\n')
    after = line()
except (SystemExit, OSError):
    pass
print(json.dumps(dict(res, after=after)))
`;

test(
  'a slow client reading a large RETR is not logged out while it reads',
  { timeout: 120_000 },
  async () => {
    const res = await readSlowly(SLOW_POP3, r.ports.pop3);
    // the whole message and its end, and no -ERR, though reading it took longer than the
    // autologout
    assert.match(res.tail, /\r\n\.\r\n$/, `read ${res.got} bytes in ${res.seconds} s: ${res.tail}`);
    assert.doesNotMatch(res.tail, /-ERR/, res.tail);
    assert.ok(res.got > BODY_BYTES, `${res.got} bytes read`);
    assert.ok(res.seconds * 1000 > 2 * AUTOLOGOUT_MS, `read in ${res.seconds} s`);
    // and the session goes on
    assert.match(res.after, /^\+OK/, res.after);
  },
);
