// Real clients other than imapflow: Python's imaplib and poplib, curl's imap:// and pop3://.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { Quotas, folderDir } from '@mailyard/mailstore';
import { waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, sampleMessage, sendRaw, startRetrieval, type Retrieval } from './helpers.js';
import { RawImap } from './raw-imap.js';

const run = promisify(execFile);
let p: Platform;
let r: Retrieval;
const PYUSER = 'py@example.test';
const POPUSER = 'pop@example.test';
const CURLUSER = 'curl@example.test';
const QUSER = 'quota@example.test';
const THREADUSER = 'thread@example.test';
const SORTUSER = 'sort@example.test';
const POPIMAPUSER = 'popimap@example.test';
const MIGRATEDUSER = 'migrated@example.test';

before(async () => {
  p = await startPlatform();
  for (const u of [PYUSER, POPUSER, CURLUSER, QUSER, THREADUSER, SORTUSER, POPIMAPUSER, MIGRATEDUSER])
    await addAccount(p.directory, u);
  r = await startRetrieval(p);
  await sendRaw(p, PYUSER, sampleMessage(1, ' Grüße aus Köln'));
  for (let i = 1; i <= 3; i++) await sendRaw(p, POPUSER, sampleMessage(i, '\r\n.a line starting with a dot'));
  await sendRaw(p, CURLUSER, sampleMessage(7));
});
after(async () => {
  await r?.stop();
  await p?.close();
});

async function python(script: string, ...args: string[]): Promise<string> {
  const { stdout } = await run('python3', ['-c', script, ...args], { timeout: 30_000 });
  return stdout;
}

const stored = (account: string) => p.inbox(account).map((f) => readFileSync(f));

void describe('Python imaplib', () => {
  void it('logs in after STARTTLS, fetches the exact body, searches UTF-8, stores, expunges', async () => {
    const expectedBody = stored(PYUSER)[0]!.toString('latin1');
    const out = await python(
      `
import imaplib, ssl, sys, json
port, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4('127.0.0.1', port)
res = {'pre': m.capabilities}
m.starttls(ssl_context=ctx)
m.login(user, pw)
typ, data = m.select('INBOX')
res['exists'] = data[0].decode()
typ, data = m.fetch('1', '(BODY.PEEK[] FLAGS)')
res['body'] = data[0][1].decode('latin1')
typ, data = m.search('UTF-8', 'BODY', 'Grüße'.encode())
res['search'] = data[0].decode()
typ, data = m.uid('STORE', '1', '+FLAGS', '(\\\\Deleted)')
res['store'] = typ
m.expunge()
typ, data = m.select('INBOX')
res['after'] = data[0].decode()
typ, data = m.list()
res['list'] = [d.decode() for d in data]
m.create('Projekte/&ANw-bersicht')
typ, data = m.list('""', 'Projekte/*')
res['nested'] = [d.decode() for d in data]
m.logout()
print(json.dumps(res))
`,
      String(r.ports.imap),
      PYUSER,
      PASSWORD,
    );
    const res = JSON.parse(out) as Record<string, unknown>;
    // r.ports.imap allows plaintext from 127.0.0.1 in this suite, so LOGINDISABLED is tested elsewhere
    assert.equal(res.exists, '1');
    assert.equal(res.body, expectedBody);
    assert.equal(res.search, '1');
    assert.equal(res.store, 'OK');
    assert.equal(res.after, '0');
    assert.ok((res.list as string[]).some((l) => l.includes('\\Junk') && l.includes('"Junk"')));
    // modified UTF-7 on the wire for a client that did not enable UTF8=ACCEPT
    assert.deepEqual(res.nested, ['(\\HasNoChildren) "/" "Projekte/&ANw-bersicht"']);
  });
});

/** A message of the THREAD conversation, sent at 2025-01-06 <hour>:<minute> UTC. */
function threadMessage(id: string, subject: string, time: string, refs: string[] = []): string {
  return [
    'From: "Sender Name" <sender@remote.example>',
    `To: ${THREADUSER}`,
    `Subject: ${subject}`,
    `Date: Mon, 6 Jan 2025 ${time}:00 +0000`,
    `Message-ID: <${id}@remote.example>`,
    ...(refs.length
      ? [
          `In-Reply-To: <${refs[refs.length - 1]}@remote.example>`,
          `References: ${refs.map((r) => `<${r}@remote.example>`).join(' ')}`,
        ]
      : []),
    '',
    'Body.',
    '',
  ].join('\r\n');
}

void describe('THREAD (RFC 5256) with Python imaplib', () => {
  void it('threads a conversation by references and by subject, with sequence numbers and UIDs', async () => {
    // a first message, expunged below, so that UIDs are not sequence numbers
    await sendRaw(p, THREADUSER, sampleMessage(1));
    const conversation = [
      threadMessage('kickoff', 'Project kickoff', '10:00'),
      threadMessage('reply', 'Re: Project kickoff', '11:00', ['kickoff']),
      threadMessage('reply2', 'Re: Re: Project kickoff', '12:00', ['kickoff', 'reply']),
      threadMessage('lunch', 'Lunch on Friday', '10:30'),
      // its parent never reached this mailbox
      threadMessage('budget2', 'Re: Budget figures', '13:00', ['budget-missing']),
      // sent before reply2 but delivered after it
      threadMessage('reply3', 'RE: Project kickoff', '11:30', ['kickoff']),
    ];
    for (const m of conversation) await sendRaw(p, THREADUSER, m);
    const out = await python(
      `
import imaplib, sys, json
m = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))
m.login(sys.argv[2], sys.argv[3])
res = {'caps': m.capability()[1][0].decode()}
m.select('INBOX')
m.store('1', '+FLAGS', '(\\Deleted)')
m.expunge()
res['refs'] = m.thread('REFERENCES', 'UTF-8', 'ALL')[1][0].decode()
res['uid_refs'] = m.uid('THREAD', 'REFERENCES', 'UTF-8', 'ALL')[1][0].decode()
res['subject'] = m.thread('ORDEREDSUBJECT', 'UTF-8', 'ALL')[1][0].decode()
res['uid_subject'] = m.uid('THREAD', 'ORDEREDSUBJECT', 'US-ASCII', 'ALL')[1][0].decode()
res['searched'] = m.thread('REFERENCES', 'UTF-8', '1,3:6', 'SUBJECT', 'kickoff')[1][0].decode()
res['none'] = m.thread('REFERENCES', 'UTF-8', 'SUBJECT', '"no such subject"')[1][0] in (None, b'')
try:
    m.thread('JWZ', 'UTF-8', 'ALL')
    res['unknown'] = 'OK'
except imaplib.IMAP4.error as e:
    res['unknown'] = str(e)
res['koi8'] = m.thread('REFERENCES', 'KOI8-R', 'ALL')[1][0].decode()
typ, data = m.thread('REFERENCES', 'X-NO-SUCH-CHARSET', 'ALL')
res['charset'] = typ + ' ' + data[0].decode()
m.logout()
print(json.dumps(res))
`,
      String(r.ports.imap),
      THREADUSER,
      PASSWORD,
    );
    const res = JSON.parse(out) as Record<'caps' | 'refs' | 'uid_refs' | 'subject' | 'uid_subject', string> &
      Record<'searched' | 'unknown' | 'koi8' | 'charset', string> & { none: boolean };
    assert.match(res.caps, /\bTHREAD=REFERENCES\b/);
    assert.match(res.caps, /\bTHREAD=ORDEREDSUBJECT\b/);
    // kickoff (1) with reply (2) -> reply2 (3) and reply3 (6); lunch (4); the budget
    // reply (5) stands alone once its missing parent's dummy is pruned
    assert.equal(res.refs, '(1 (2 3)(6))(4)(5)');
    assert.equal(res.uid_refs, '(2 (3 4)(7))(5)(6)');
    assert.equal(res.subject, '(1 (2)(6)(3))(4)(5)');
    assert.equal(res.uid_subject, '(2 (3)(7)(4))(5)(6)');
    // only the searched messages take part: without reply (2), reply2 (3) refers to a
    // dummy that is pruned, so it becomes reply3's sibling under kickoff
    assert.equal(res.searched, '(1 (6)(3))');
    assert.equal(res.none, true, 'a bare "* THREAD" when nothing matches');
    assert.match(res.unknown, /THREAD command error: BAD .*unknown threading algorithm JWZ/);
    // any charset the server reads will do; one it does not is NO [BADCHARSET]
    assert.equal(res.koi8, res.refs);
    assert.match(res.charset, /^NO \[BADCHARSET \(UTF-8 US-ASCII\)\]/);
  });
});

void describe('CONTEXT=SORT (RFC 5267) with Python imaplib', () => {
  void it('keeps an open sorted result current as another session appends, reads and expunges', async () => {
    const out = await python(
      `
import imaplib, sys, json
port, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
imaplib.Commands['CANCELUPDATE'] = ('SELECTED',)
def login():
    c = imaplib.IMAP4('127.0.0.1', port)
    c.login(user, pw)
    return c
m, o = login(), login()
res = {'caps': m.capability()[1][0].decode()}
for s in ['delta', 'alpha', 'charlie']:
    o.append('INBOX', None, None, ('Subject: %s\\r\\n\\r\\nbody\\r\\n' % s).encode())
m.select('INBOX')
o.select('INBOX')
def esearch(c):
    return [d.decode() for d in (c.response('ESEARCH')[1] or []) if d]
typ, _ = m.uid('SORT', 'RETURN', '(UPDATE ALL)', '(SUBJECT)', 'UTF-8', 'UNSEEN')
res['first'] = esearch(m)
typ, _ = m.uid('SORT', 'RETURN', '(UPDATE PARTIAL 1:2)', '(REVERSE SUBJECT)', 'UTF-8', 'ALL')
res['partial'] = esearch(m)
o.append('INBOX', None, None, b'Subject: bravo\\r\\n\\r\\nbody\\r\\n')
m.noop()
res['appended'] = esearch(m)
o.store('3', '+FLAGS', '(\\Seen)')
m.noop()
res['seen'] = esearch(m)
o.store('1', '+FLAGS', '(\\Deleted)')
o.expunge()
m.noop()
res['expunged'] = esearch(m)
res['cancel'] = m._simple_command('CANCELUPDATE', '"%s"' % 'bogus')[0]
m.logout(); o.logout()
print(json.dumps(res))
`,
      String(r.ports.imap),
      SORTUSER,
      PASSWORD,
    );
    const res = JSON.parse(out) as Record<'caps' | 'cancel', string> &
      Record<'first' | 'partial' | 'appended' | 'seen' | 'expunged', string[]>;
    assert.match(res.caps, /\bCONTEXT=SORT\b/);
    // UIDs 1 delta, 2 alpha, 3 charlie: by subject 2, 3, 1
    assert.match(res.first[0]!, /\(TAG "\w+"\) UID ALL 2:3,1$/);
    // reversed, the first two: delta, charlie
    assert.match(res.partial[0]!, /UID PARTIAL \(1:2 1,3\)$/);
    // bravo (4) is the 2nd unseen by subject; in the reversed window it is 3rd: no change there
    assert.deepEqual(
      res.appended.map((l) => l.replace(/^\(TAG "\w+"\) /, '')),
      ['UID ADDTO (2 4)'],
    );
    // charlie read: it leaves the unseen result at position 3
    assert.deepEqual(
      res.seen.map((l) => l.replace(/^\(TAG "\w+"\) /, '')),
      ['UID REMOVEFROM (3 3)'],
    );
    // delta expunged: first of the unseen (alpha, bravo, delta → position 3), and the
    // reversed window 1:2 (delta, charlie) becomes charlie, bravo
    assert.deepEqual(res.expunged.map((l) => l.replace(/^\(TAG "\w+"\) /, '')).sort(), [
      'UID REMOVEFROM (1 1) ADDTO (2 4)',
      'UID REMOVEFROM (3 1)',
    ]);
    assert.equal(res.cancel, 'NO');
  });
});

void describe('POP3 (Python poplib)', () => {
  void it('lists, retrieves dot-stuffed mail byte-exactly, deletes only at QUIT, one session per mailbox', async () => {
    const files = stored(POPUSER).map((b) => b.toString('latin1'));
    const script = `
import poplib, ssl, sys, json
port, user, pw, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
res = {}
if mode == 'tls':
    p = poplib.POP3_SSL('127.0.0.1', port, context=ctx)
else:
    p = poplib.POP3('127.0.0.1', port)
    res['capa'] = sorted(p.capa().keys())
    p.stls(context=ctx)
p.user(user); p.pass_(pw)
res['stat'] = p.stat()
res['uidl'] = [u.decode() for u in p.uidl()[1]]
resp, lines, octets = p.retr(1)
res['msg1'] = b'\\r\\n'.join(lines).decode('latin1') + '\\r\\n'
res['octets'] = octets
res['top'] = [l.decode('latin1') for l in p.top(1, 0)[1]]
try:
    q = poplib.POP3_SSL('127.0.0.1', int(sys.argv[5]), context=ctx)
    q.user(user); q.pass_(pw)
    res['second'] = 'logged in'
except poplib.error_proto as e:
    res['second'] = e.args[0].decode()
if mode != 'tls':
    p.dele(1)
    res['stat_after_dele'] = p.stat()
    p.quit()
else:
    p.quit()
print(json.dumps(res))
`;
    const out = JSON.parse(
      await python(script, String(r.ports.pop3), POPUSER, PASSWORD, 'stls', String(r.ports.pop3s)),
    ) as Record<string, unknown>;
    assert.ok((out.capa as string[]).includes('STLS'));
    assert.ok((out.capa as string[]).includes('UIDL'));
    assert.ok((out.capa as string[]).includes('RESP-CODES'));
    assert.equal((out.stat as number[])[0], 3);
    assert.equal((out.uidl as string[]).length, 3);
    assert.match((out.uidl as string[])[0]!, /^1 [0-9A-F]{16}$/);
    assert.ok(files.includes(out.msg1 as string), 'RETR returns the stored message after un-stuffing');
    assert.ok((out.top as string[]).some((l) => l.startsWith('Subject: ')));
    assert.match(out.second as string, /^-ERR \[IN-USE\]/);
    assert.equal((out.stat_after_dele as number[])[0], 2);
    // QUIT removed the message; a new session (implicit TLS, port 995 role) sees two
    await waitFor(async () => {
      const o = JSON.parse(
        await python(script, String(r.ports.pop3s), POPUSER, PASSWORD, 'tls', String(r.ports.pop3s)),
      ) as { stat: number[] };
      return o.stat[0] === 2;
    });
  });

  void it('keeps messages when the connection drops without QUIT', async () => {
    const out = await python(
      `
import poplib, sys, socket
p = poplib.POP3('127.0.0.1', int(sys.argv[1]))
p.user(sys.argv[2]); p.pass_(sys.argv[3])
p.dele(1)
p.sock.shutdown(socket.SHUT_RDWR)
p.sock.close()
q = None
import time
for i in range(50):
    try:
        q = poplib.POP3('127.0.0.1', int(sys.argv[1])); q.user(sys.argv[2]); q.pass_(sys.argv[3]); break
    except poplib.error_proto:
        time.sleep(0.1)
print(q.stat()[0]); q.quit()
`,
      String(r.ports.pop3),
      POPUSER,
      PASSWORD,
    );
    assert.equal(out.trim(), '2');
  });
});

void describe('POP3 and IMAP on one mailbox', () => {
  void it('answers RETR of a message expunged over IMAP with a plain -ERR and serves the rest', async () => {
    const out = await python(
      `
import imaplib, poplib, sys, json
pop_port, imap_port, user, pw = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
res = {}
i = imaplib.IMAP4('127.0.0.1', imap_port)
i.login(user, pw)
for k in range(3):
    i.append('INBOX', None, None, ('From: a@remote.example\\r\\nSubject: m%d\\r\\n\\r\\nbody %d\\r\\n' % (k, k)).encode())
p = poplib.POP3('127.0.0.1', pop_port)
p.user(user); p.pass_(pw)
i.select('INBOX')
i.store('2', '+FLAGS', '\\\\Deleted')
i.expunge()
# asked more often than the bad-command limit (10): no reason to close the session
for _ in range(12):
    try:
        p.retr(2)
        res['retr2'] = 'ok'
    except poplib.error_proto as e:
        res['retr2'] = e.args[0].decode()
res['retr3'] = b'\\n'.join(p.retr(3)[1]).decode()
p.dele(3)
res['quit'] = p.quit().decode()
i.noop()
res['left'] = i.uid('SEARCH', None, 'ALL')[1][0].decode()
i.logout()
print(json.dumps(res))
`,
      String(r.ports.pop3),
      String(r.ports.imap),
      POPIMAPUSER,
      PASSWORD,
    );
    const res = JSON.parse(out) as Record<string, string>;
    // Dovecot answers "-ERR Message 2 expunged."; not [SYS/TEMP]: it will not come back
    assert.match(res.retr2!, /^-ERR Message 2 expunged/);
    assert.match(res.retr3!, /Subject: m2\n\nbody 2$/);
    assert.match(res.quit!, /^\+OK Logging out, 1 message deleted/);
    assert.equal(res.left, '1');
  });

  void it('lists a Dovecot file copied or moved, or one appended with LF line ends, with the size RETR sends', async () => {
    const imapScript = (steps: string) => `
import imaplib, sys
m = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))
m.login(sys.argv[2], sys.argv[3])
${steps}
m.logout()
`;
    await python(imapScript("m.create('Migrated')"), String(r.ports.imap), MIGRATEDUSER, PASSWORD);
    const text = (i: number) => `From: a@example.net\nSubject: migrated ${i}\n\nline one\nline two of ${i}\n`;
    /** With CRLF line ends, as RETR sends it. */
    const sent = (t: string) => t.length + t.split('\n').length - 1;
    // as Dovecot left them: LF line ends, the size on disk as S= and with CRLF as W=
    for (const i of [1, 2]) {
      const name = `${1_700_000_000 + i}.M${i}P1.old.example,S=${text(i).length},W=${sent(text(i))}:2,S`;
      writeFileSync(join(folderDir(p.maildir, MIGRATEDUSER, 'Migrated'), 'cur', name), text(i));
    }
    await python(
      imapScript(`m.select('Migrated')
assert m.copy('1', 'INBOX')[0] == 'OK'
assert m._simple_command('MOVE', '2', 'INBOX')[0] == 'OK'
# as a client that sends its LF line ends as they are (imaplib's append would make them CRLF)
m.literal = sys.argv[4].encode()
assert m._simple_command('APPEND', 'INBOX')[0] == 'OK'`),
      String(r.ports.imap),
      MIGRATEDUSER,
      PASSWORD,
      text(3),
    );
    const out = await python(
      `
import poplib, sys, json
p = poplib.POP3('127.0.0.1', int(sys.argv[1]))
p.user(sys.argv[2]); p.pass_(sys.argv[3])
res = {'list': [l.decode() for l in p.list()[1]], 'stat': p.stat(), 'retr': [p.retr(n)[2] for n in (1, 2, 3)]}
p.quit()
print(json.dumps(res))
`,
      String(r.ports.pop3),
      MIGRATEDUSER,
      PASSWORD,
    );
    const res = JSON.parse(out) as { list: string[]; stat: number[]; retr: number[] };
    const sizes = [1, 2, 3].map((i) => sent(text(i)));
    assert.deepEqual(res.retr, sizes, 'RETR sends CRLF line ends');
    assert.deepEqual(
      res.list,
      sizes.map((size, i) => `${i + 1} ${size}`),
    );
    assert.deepEqual(res.stat, [3, sizes.reduce((a, b) => a + b)]);
    // the files keep both sizes, as Dovecot names its own
    const names = readdirSync(join(folderDir(p.maildir, MIGRATEDUSER, 'INBOX'), 'cur'));
    for (const [i, size] of sizes.entries())
      assert.ok(
        names.some((n) => n.includes(`,S=${text(i + 1).length},W=${size}:2,`)),
        names.join(' '),
      );
  });
});

void describe('curl', () => {
  void it('fetches a message over imap:// and pop3:// with STARTTLS', async () => {
    const expected = stored(CURLUSER)[0]!.toString();
    const common = ['-s', '--ssl-reqd', '-k', '-u', `${CURLUSER}:${PASSWORD}`];
    const imap = await run('curl', [...common, `imap://127.0.0.1:${r.ports.imap}/INBOX;UID=1`]);
    assert.equal(imap.stdout, expected);
    const pop = await run('curl', [...common, `pop3://127.0.0.1:${r.ports.pop3}/1`]);
    assert.equal(pop.stdout, expected);
    const imaps = await run('curl', [
      '-s',
      '-k',
      '-u',
      `${CURLUSER}:${PASSWORD}`,
      `imaps://127.0.0.1:${r.ports.imaps}/INBOX;UID=1`,
    ]);
    assert.equal(imaps.stdout, expected);
  });
});

void describe('quota', () => {
  /** A raw IMAP session of `user`, logged in. */
  const rawSession = async (user: string) => {
    const c = await RawImap.connect(r.ports.imap);
    await c.until(/^\* OK/m);
    assert.match(await c.cmd('l', `LOGIN ${user} "${PASSWORD}"`, 20_000), /^l OK/m);
    return c;
  };

  void it('reports usage over IMAP QUOTA and refuses delivery beyond the limit', async () => {
    await sendRaw(p, QUSER, sampleMessage(1));
    const used = stored(QUSER)[0]!.length;
    await new Quotas(p.redis.redis, 0).set(QUSER, used + 100);
    const out = await python(
      `
import imaplib, sys
m = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))
m.login(sys.argv[2], sys.argv[3])
print(m.getquotaroot('INBOX')[1])
typ, data = m.append('INBOX', None, None, b'Subject: big\\r\\n\\r\\n' + b'x' * 500 + b'\\r\\n')
print(typ, data)
`,
      String(r.ports.imap),
      QUSER,
      PASSWORD,
    );
    assert.match(out, /STORAGE 1 0\)|STORAGE \d+ \d+\)/);
    assert.match(out, /NO \[b'\[OVERQUOTA\]/);
    // delivery: the copy is not filed; the sender gets a DSN with 5.2.2 (Dovecot's default)
    const t = (await import('nodemailer')).default.createTransport({
      host: '127.0.0.1',
      port: p.inbound.port,
      ignoreTLS: true,
    });
    await t.sendMail({
      envelope: { from: CURLUSER, to: [QUSER] },
      raw: sampleMessage(2, 'y'.repeat(500)),
    });
    t.close();
    const dsn = await waitFor(
      () => stored(CURLUSER).find((m) => m.toString().includes('Undelivered Mail Returned to Sender')),
      { what: "the over-quota DSN in the sender's INBOX" },
    );
    const text = dsn.toString();
    assert.match(text, /Status: 5\.2\.2/);
    assert.match(text, new RegExp(`Final-Recipient: rfc822; ?${QUSER}`));
    assert.match(text, /Mailbox full/);
    assert.match(
      await p.deliveryRt!.registry.getSingleMetricAsString('mailyard_delivery_deliveries_total'),
      /result="over-quota"/,
    );
    assert.equal(stored(QUSER).length, 1);

    // an expunge over IMAP frees the space at once (maildirsize is kept by both services)
    const after = await python(
      `
import imaplib, sys
m = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))
m.login(sys.argv[2], sys.argv[3])
m.select('INBOX')
m.store('1', '+FLAGS', '\\\\Deleted')
m.expunge()
print(m.getquotaroot('INBOX')[1])
`,
      String(r.ports.imap),
      QUSER,
      PASSWORD,
    );
    assert.match(after, /STORAGE 0 \d+\)/);
    const t2 = (await import('nodemailer')).default.createTransport({
      host: '127.0.0.1',
      port: p.inbound.port,
      ignoreTLS: true,
    });
    await t2.sendMail({ envelope: { from: CURLUSER, to: [QUSER] }, raw: sampleMessage(3) });
    t2.close();
    await waitFor(() => stored(QUSER).find((m) => m.toString().includes('Test message 3')), {
      what: 'the next message filed once space was freed',
    });
    assert.match(readFileSync(join(p.inbox(QUSER)[0]!, '..', '..', 'maildirsize'), 'utf8'), /^\d+S\n/);
  });

  void it('over quota, COPY is refused but MOVE (how clients delete to Trash) works', async () => {
    const user = 'quota-move@example.test';
    await addAccount(p.directory, user);
    const msg = `Subject: q\r\n\r\n${'x'.repeat(2000)}\r\n`;
    const session = () => rawSession(user);
    const first = await session();
    try {
      assert.match(await first.cmd('c', 'CREATE Bin', 20_000), /^c OK/m);
      for (const tag of ['a1', 'a2'])
        assert.match(
          await first.cmd(tag, `APPEND INBOX {${msg.length}+}\r\n${msg}`, 20_000),
          new RegExp(`^${tag} OK`, 'm'),
        );
    } finally {
      first.close();
    }
    await new Quotas(p.redis.redis, 0).set(user, 1000);
    const c = await session();
    try {
      assert.match(await c.cmd('s', 'SELECT INBOX', 20_000), /^s OK/m);
      assert.match(await c.cmd('k', 'UID COPY 1 Bin', 20_000), /^k NO \[OVERQUOTA\]/m);
      const moved = await c.cmd('m', 'UID MOVE 1:2 Bin', 20_000);
      assert.match(moved, /^m OK/m);
      assert.match(moved, /^\* 1 EXPUNGE/m);
      assert.match(await c.cmd('st', 'STATUS Bin (MESSAGES)', 20_000), /\* STATUS "Bin" \(MESSAGES 2\)/);
      assert.match(
        await c.cmd('st2', 'STATUS INBOX (MESSAGES)', 20_000),
        /\* STATUS "?INBOX"? \(MESSAGES 0\)/,
      );
    } finally {
      c.close();
    }
  });

  void it('a limit set while a session is open refuses the next session’s APPEND at once', async () => {
    const user = 'quota-later@example.test';
    await addAccount(p.directory, user);
    const msg = `Subject: q\r\n\r\n${'x'.repeat(2000)}\r\n`;
    const append = (c: RawImap, tag: string) => c.cmd(tag, `APPEND INBOX {${msg.length}+}\r\n${msg}`, 20_000);
    const session = () => rawSession(user);
    const open = await session();
    try {
      assert.match(await append(open, 'a1'), /^a1 OK/m);
      await new Quotas(p.redis.redis, 0).set(user, 1000);
      const next = await session();
      try {
        assert.match(await append(next, 'a2'), /^a2 NO \[OVERQUOTA\]/m);
      } finally {
        next.close();
      }
    } finally {
      open.close();
    }
  });
});
