// QRESYNC's VANISHED (EARLIER) (RFC 7162 §3.2.5.1, §3.2.6) once the store's history of
// expunges no longer reaches back to the client's MODSEQ: the client must still learn of
// every message it holds that is gone, or it keeps showing mail that was deleted.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MailAccount } from '@mailyard/mailstore';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, startRetrieval, type Retrieval } from './helpers.js';
import { RawImap } from './raw-imap.js';

let p: Platform;
let r: Retrieval;

before(async () => {
  p = await startPlatform();
  r = await startRetrieval(p);
});
after(async () => {
  await r?.stop();
  await p?.close();
});

async function login(user: string): Promise<RawImap> {
  const c = await RawImap.loggedIn(r.ports.imap, user, PASSWORD);
  assert.match(await c.cmd('e', 'ENABLE QRESYNC'), /^e OK/m);
  return c;
}

const number = (out: string, re: RegExp): number => Number(re.exec(out)?.[1] ?? NaN);

void describe('VANISHED (EARLIER) beyond the kept history', { timeout: 180_000 }, () => {
  void it('names every UID gone since, exactly while the history reaches back', async () => {
    const user = 'resync@example.test';
    await addAccount(p.directory, user);
    // filed straight into the store
    const n = 300;
    const inbox = new MailAccount(p.maildir, user).folder('INBOX');
    await inbox.ensure();
    const date = new Date('2026-01-05T10:00:00Z');
    await inbox.appendMany(
      Array.from({ length: n }, (_, i) => ({
        data: Buffer.from(`From: a@example.test\r\nSubject: ${i + 1}\r\n\r\nbody\r\n`),
        flags: [],
        date,
      })),
    );

    const a = await login(user);
    const sel = await a.cmd('s', 'SELECT INBOX');
    const validity = number(sel, /UIDVALIDITY (\d+)/);
    const before = number(sel, /HIGHESTMODSEQ (\d+)/);
    assert.match(sel, new RegExp(`^\\* ${n} EXISTS`, 'm'));
    // the client had all of them at `before`; then all but the last five go
    const gone = n - 5;
    assert.match(await a.cmd('d', `UID STORE 1:${gone} +FLAGS.SILENT (\\Deleted)`), /^d OK/m);
    assert.match(await a.cmd('x', `UID EXPUNGE 1:${gone}`), /^x OK/m);
    const mid = number(await a.cmd('n', 'NOOP'), /HIGHESTMODSEQ (\d+)/) || before;
    // the history cut after these expunges, as it is once it outgrew its size
    // (packages/mailstore tests the cut itself)
    const cut = number(await a.cmd('c', 'STATUS INBOX (HIGHESTMODSEQ)'), /HIGHESTMODSEQ (\d+)/);
    assert.ok(cut > before);
    await appendFile(join(inbox.dir, 'mailyard-expunged'), `- ${cut}\n`);
    assert.equal(await inbox.vanishedSince(before), null, 'the history no longer reaches back');

    // a client coming back from `before`: the history no longer reaches back
    const b = await login(user);
    const resel = await b.cmd('s', `SELECT INBOX (QRESYNC (${validity} ${before}))`);
    assert.match(resel, /^s OK/m);
    assert.match(resel, new RegExp(`^\\* VANISHED \\(EARLIER\\) 1:${gone}\\r$`, 'm'));
    assert.match(resel, /^\* 5 EXISTS/m);
    // UID FETCH ... VANISHED: limited to the UIDs asked about
    const some = await b.cmd('f', `UID FETCH 1:100 (FLAGS) (CHANGEDSINCE ${before} VANISHED)`);
    assert.match(some, /^f OK/m);
    assert.match(some, /^\* VANISHED \(EARLIER\) 1:100\r$/m);
    const all = await b.cmd('g', `UID FETCH 1:* (FLAGS) (CHANGEDSINCE ${before} VANISHED)`);
    assert.match(all, new RegExp(`^\\* VANISHED \\(EARLIER\\) 1:${gone}\\r$`, 'm'));

    // within the history, exactly what went since: one more expunge after `mid`
    const since = number(await b.cmd('m', 'STATUS INBOX (HIGHESTMODSEQ)'), /HIGHESTMODSEQ (\d+)/);
    assert.ok(since >= mid, `HIGHESTMODSEQ ${since} after the expunge (${mid})`);
    assert.match(await a.cmd('d2', `UID STORE ${n} +FLAGS.SILENT (\\Deleted)`), /^d2 OK/m);
    assert.match(await a.cmd('x2', `UID EXPUNGE ${n}`), /^x2 OK/m);
    const c = await login(user);
    const exact = await c.cmd('s', `SELECT INBOX (QRESYNC (${validity} ${since}))`);
    assert.match(exact, new RegExp(`^\\* VANISHED \\(EARLIER\\) ${n}\\r$`, 'm'));
    assert.match(exact, /^\* 4 EXISTS/m);
    for (const x of [a, b, c]) x.close();
  });
});
