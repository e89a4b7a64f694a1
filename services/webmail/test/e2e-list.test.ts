// The message list in a real browser (Debian's Chromium through playwright-core) after
// messages leave it: the keyboard goes on with the message that took the place of one
// archived, as in Gmail and Roundcube; in a long folder scrolled far down, a message
// deleted there leaves the rows near the top as they are (the pages loaded in between
// are not the list's own pages shifted up); a message dropped back on its own folder
// stays, and nothing says it moved; a star set while a read of the list was on its way
// stays shown when that read comes back, until a read from after shows the server's flags;
// a message another client moved away meanwhile is not shown flagged when the flag could
// not be set; in a folder of more than a page, a message being archived is not shown again
// by the page read meanwhile, a page read answered after a later one is not shown, and a
// message the server could not archive comes back.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import type { Page, Request, Route } from 'playwright-core';
import { waitFor } from '@mailyard/testkit';
import { onNewPage } from './browser.js';
import { logIn, webmailFile } from './file-setup.js';
import { storedFlags } from './mail-clients.js';
import { plainMessage } from './messages.js';
import { ALICE } from './webmail-harness.js';

let origin: string;
let imap: ImapFlow;

/** Rows of the long folder: far more than the pages of 50 the list loads around the view. */
const LONG = 300;
const longSubject = (n: number) => `Long ${String(n).padStart(3, '0')}`;
/** Rows of a folder of more than a page of 50: only the first page loaded when opened. */
const SIXTY = 60;

webmailFile({ browser: true, store: ALICE }, async (f) => {
  ({ origin, imap } = f);
  await imap.append('INBOX', plainMessage({ subject: 'Star me' }));
  await imap.append('INBOX', plainMessage({ subject: 'Read on the phone' }));
  await imap.append('INBOX', plainMessage({ subject: 'Drag me around' }));
  await imap.append('INBOX', plainMessage({ subject: 'Filed by the phone' }));
  for (const n of [1, 2, 3, 4]) await imap.append('INBOX', plainMessage({ subject: `Keyboard ${n}` }));
  await imap.mailboxCreate('Elsewhere');
  await imap.mailboxCreate('Late');
  for (const n of [1, 2]) await imap.append('Late', plainMessage({ subject: `Late ${n}` }));
  await imap.mailboxCreate('Sixty');
  for (let n = 1; n <= SIXTY; n++) await imap.append('Sixty', plainMessage({ subject: `Sixty ${n}` }));
  await imap.mailboxCreate('Long');
  for (let n = 1; n <= LONG; n++)
    await imap.append('Long', plainMessage({ subject: longSubject(n) }), ['\\Seen']);
});

/** A promise, and the function that settles it. */
function signal(): [() => void, Promise<void>] {
  let settle!: () => void;
  const settled = new Promise<void>((resolve) => (settle = resolve));
  return [settle, settled];
}

/** Another client (a phone's mail app) sets or clears a flag of a message of INBOX. */
async function otherClientFlags(uid: number, flag: string, on: boolean) {
  const lock = await imap.getMailboxLock('INBOX');
  try {
    if (on) await imap.messageFlagsAdd(String(uid), [flag], { uid: true });
    else await imap.messageFlagsRemove(String(uid), [flag], { uid: true });
  } finally {
    lock.release();
  }
}

/** A request's answer, fetched from here (where the test host name is not known). */
async function fetchHere(route: Route) {
  const url = new URL(route.request().url());
  const host = url.host;
  url.hostname = '127.0.0.1';
  return route.fetch({ url: url.href, headers: { ...route.request().headers(), host } });
}

/** Logged in, the folder of sixty open and the keyboard on its first row (the newest). */
async function openSixty(page: Page) {
  await logInHere(page);
  await page.locator('[data-folder="Sixty"]').click();
  await row(page, `Sixty ${SIXTY}`).waitFor();
  await page.keyboard.press('j');
  await focusOn(page, `Sixty ${SIXTY}`);
}

/** The row of `subject` has the focus (the keyboard acts on it). */
const focusOn = (page: Page, subject: string) =>
  waitFor(async () => new RegExp(`${subject},`).test(String(await focusedRow(page))), {
    what: `the focus on ${subject}`,
  });

/**
 * Archives held on their way until `release`, then sent on (or answered by `answer`);
 * `asked` settles with the first.
 */
async function holdArchives(page: Page, answer = (route: Route) => route.continue()) {
  const [archiveAsked, asked] = signal();
  const [release, held] = signal();
  await page.route('**/api/messages/archive', async (route) => {
    archiveAsked();
    await held;
    await answer(route);
  });
  return { asked, release };
}

const list = (page: Page) => page.getByRole('listbox', { name: 'Messages' });
const row = (page: Page, subject: string) => list(page).getByRole('option', { name: new RegExp(subject) });
/** The accessible name of what has the focus (a row's: who, subject, date), else nothing. */
const focusedRow = async (page: Page) => {
  const focused = page.locator(':focus');
  return (await focused.count()) ? await focused.getAttribute('aria-label') : null;
};

/** Logged in, with the folders shown (the test of the long folder opens it). */
const logInHere = (page: Page) =>
  logIn(page, { at: origin, ready: (p) => p.locator('[data-folder="Long"]') });

describe('the webmail in a browser: the list after messages leave it', () => {
  test('e, e archives one message, then the next', { timeout: 120_000 }, async () => {
    await onNewPage('10.5.1.1', async (page) => {
      await logInHere(page);
      // newest first: Keyboard 4 at the top
      await page.keyboard.press('j');
      // the focus moves when the list has drawn after the key
      await waitFor(async () => /Keyboard 4/.test(String(await focusedRow(page))), {
        what: 'the focus on Keyboard 4',
      });
      await page.keyboard.press('e');
      await page.getByRole('status').filter({ hasText: 'Archived to Archive' }).waitFor();
      await waitFor(async () => (await row(page, 'Keyboard 4').count()) === 0, { what: 'Keyboard 4 gone' });
      // the one that took its place is selected, and has the focus
      await waitFor(async () => /Keyboard 3/.test(String(await focusedRow(page))), {
        what: 'the focus on Keyboard 3',
      });
      assert.equal(await row(page, 'Keyboard 3').getAttribute('aria-selected'), 'true');
      await page.keyboard.press('e');
      await waitFor(async () => (await row(page, 'Keyboard 3').count()) === 0, { what: 'Keyboard 3 gone' });
      // the row leaves the list before the server has moved the message: wait for the move
      const archived = await waitFor(
        async () => {
          const m = await storedFlags(imap, 'Archive');
          return m.size === 2 ? m : null;
        },
        { what: 'two messages in Archive' },
      );
      assert.deepEqual([...archived.keys()].sort(), ['Keyboard 3', 'Keyboard 4']);
      const inboxKeyboard = async () =>
        [...(await storedFlags(imap, 'INBOX')).keys()].filter((s) => s.startsWith('Keyboard')).sort();
      await waitFor(async () => (await inboxKeyboard()).length === 2, { what: 'the move ended in INBOX' });
      assert.deepEqual(await inboxKeyboard(), ['Keyboard 1', 'Keyboard 2'], 'the others still in the inbox');
      // j goes on from there, to the row after the selected one
      await waitFor(async () => /Keyboard 2/.test(String(await focusedRow(page))), {
        what: 'the focus on Keyboard 2',
      });
      await page.keyboard.press('j');
      await waitFor(async () => /Keyboard 1/.test(String(await focusedRow(page))), {
        what: 'the focus on Keyboard 1',
      });
      assert.equal(await page.getByText('No such message').count(), 0);
    });
  });

  test(
    'a message deleted far down a long folder leaves the rows above in place',
    { timeout: 120_000 },
    async () => {
      await onNewPage('10.5.1.2', async (page) => {
        await logInHere(page);
        await page.locator('[data-folder="Long"]').click();
        await row(page, longSubject(LONG)).waitFor();
        // to the bottom at once (the scroll bar dragged down): the pages in between are not loaded
        const scroller = page.locator('.list-scroll');
        await scroller.evaluate((el) => (el.scrollTop = el.scrollHeight));
        await row(page, longSubject(1)).waitFor();
        await row(page, longSubject(10)).click();
        await page.getByRole('heading', { name: longSubject(10) }).waitFor();
        await page.getByRole('button', { name: 'Delete' }).click();
        await page.getByRole('status').filter({ hasText: 'Moved to Trash' }).waitFor();
        // back up to the 51st row (the second page): newest first, it is Long 250
        const rowHeight = await row(page, longSubject(1)).evaluate((el) => el.getBoundingClientRect().height);
        await scroller.evaluate((el, top) => (el.scrollTop = top), 50 * rowHeight);
        const at51 = list(page).locator('[aria-posinset="51"]');
        await at51.waitFor();
        await waitFor(async () => (await at51.getAttribute('aria-label'))?.includes('Long') ?? false, {
          what: 'the 51st row loaded',
        });
        assert.match(String(await at51.getAttribute('aria-label')), new RegExp(longSubject(LONG - 50)));
        assert.equal(await row(page, longSubject(20)).count(), 0, 'no row from the bottom up here');
        await at51.click();
        await page.getByRole('heading', { name: longSubject(LONG - 50) }).waitFor();
      });
    },
  );

  test('a message dropped on its own folder stays where it is', { timeout: 120_000 }, async () => {
    await onNewPage('10.5.1.3', async (page) => {
      const moves: string[] = [];
      page.on('request', (r) => {
        if (r.url().endsWith('/api/messages/move')) moves.push(r.postData() ?? '');
      });
      await logInHere(page);
      await row(page, 'Drag me around').dragTo(page.locator('[data-folder="INBOX"]'));
      // then somewhere else, which moves it: the only move asked for
      await row(page, 'Drag me around').dragTo(page.locator('[data-folder="Elsewhere"]'));
      await page.getByRole('status').filter({ hasText: 'Moved to Elsewhere' }).waitFor();
      assert.equal(moves.length, 1, moves.join('\n'));
      assert.equal((JSON.parse(moves[0]!) as { to: string }).to, 'Elsewhere');
      assert.deepEqual([...(await storedFlags(imap, 'Elsewhere')).keys()], ['Drag me around']);
    });
  });

  test('a page read before a message was archived does not bring it back', { timeout: 120_000 }, async () => {
    await onNewPage('10.5.1.5', async (page) => {
      await logInHere(page);
      await page.locator('[data-folder="Late"]').click();
      await row(page, 'Late 2').waitFor();
      const selected = (subject: string) =>
        waitFor(async () => (await row(page, subject).getAttribute('aria-selected')) === 'true', {
          what: `${subject} selected`,
        });
      const isListRead = (url: string) => {
        const u = new URL(url);
        return u.pathname === '/api/messages' && u.searchParams.get('folder') === 'Late';
      };
      // the list's first read from now on (the one after the first archive) is held on its way
      const [readAsked, firstRead] = signal();
      const [releaseRead, readHeld] = signal();
      let reads = 0;
      await page.route('**/api/messages?*', async (route) => {
        if (!isListRead(route.request().url()) || ++reads > 1) return route.continue();
        readAsked();
        await readHeld;
        await route.continue();
      });
      await page.keyboard.press('j');
      await selected('Late 2');
      await page.keyboard.press('e');
      await firstRead;
      // and so is the second archive: the server still has the message when it reads the list
      const archive = await holdArchives(page);
      await selected('Late 1');
      await page.keyboard.press('e');
      await archive.asked;
      await page.getByText('No messages here.').waitFor();
      // the read asked for before the second archive comes back, the message still in it
      const lateRead = page.waitForResponse((r) => isListRead(r.url()));
      releaseRead();
      await (await lateRead).finished();
      // two frames: time for the late answer to be read and drawn, were it taken
      await page.evaluate('new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))');
      assert.equal(await row(page, 'Late 1').count(), 0, 'the message archived is not shown again');
      assert.equal(await page.getByText('No messages here.').count(), 1);
      // the second archive goes on: both end in Archive, and the list stays empty
      archive.release();
      await waitFor(
        async () => {
          const m = await storedFlags(imap, 'Archive');
          return m.has('Late 1') && m.has('Late 2');
        },
        { what: 'both in Archive' },
      );
      await page.getByText('No messages here.').waitFor();
    });
  });

  test('a message the server could not archive comes back', { timeout: 120_000 }, async () => {
    await onNewPage('10.5.1.9', async (page) => {
      await openSixty(page);
      const archive = await holdArchives(page, (route) =>
        route.fulfill({
          status: 503,
          contentType: 'application/json',
          body: JSON.stringify({ error: 'unavailable', message: 'The mail store did not answer' }),
        }),
      );
      // the first page is read again meanwhile, without the row
      const reread = page.waitForResponse((r) => new URL(r.url()).searchParams.get('folder') === 'Sixty');
      await page.keyboard.press('e');
      await archive.asked;
      await (await reread).finished();
      assert.equal(await row(page, `Sixty ${SIXTY}`).count(), 0);
      archive.release();
      await page.getByRole('status').filter({ hasText: 'The mail store did not answer' }).waitFor();
      await row(page, `Sixty ${SIXTY}`).waitFor();
      assert.equal(await row(page, `Sixty ${SIXTY}`).getAttribute('aria-setsize'), String(SIXTY));
      assert.ok((await storedFlags(imap, 'Sixty')).has(`Sixty ${SIXTY}`), 'still in its folder');
    });
  });

  test(
    'a page read while a message is being archived does not bring it back',
    { timeout: 120_000 },
    async () => {
      await onNewPage('10.5.1.7', async (page) => {
        await openSixty(page);
        await page.keyboard.press('j');
        await focusOn(page, 'Sixty 59');
        // the archive is held on its way: the server still has the message meanwhile
        const archive = await holdArchives(page);
        // the first page, a row short once the row is taken out, is read again at once
        const listRead = () =>
          page.waitForResponse((r) => {
            const u = new URL(r.url());
            return u.pathname === '/api/messages' && u.searchParams.get('folder') === 'Sixty';
          });
        const reread = listRead();
        await page.keyboard.press('e');
        await archive.asked;
        await (await reread).finished();
        // two frames: time for the answer to be read and drawn
        await page.evaluate('new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))');
        assert.equal(await row(page, 'Sixty 59').count(), 0, 'the message being archived is not shown again');
        await focusOn(page, 'Sixty 58');
        assert.equal(await row(page, 'Sixty 58').getAttribute('aria-setsize'), String(SIXTY - 1));
        // j goes to the row after the one selected, not to the one that took its place
        await page.keyboard.press('j');
        await focusOn(page, 'Sixty 57');
        // the archive goes on, and the list is read again once it is done
        const refreshed = listRead();
        archive.release();
        await page.getByRole('status').filter({ hasText: 'Archived to Archive' }).waitFor();
        assert.ok((await storedFlags(imap, 'Archive')).has('Sixty 59'), 'the server has archived it');
        assert.ok(!(await storedFlags(imap, 'Sixty')).has('Sixty 59'));
        await (await refreshed).finished();
        await page.evaluate('new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))');
        assert.equal(await row(page, 'Sixty 59').count(), 0, 'not shown after the refresh either');
        await page.keyboard.press('j');
        await focusOn(page, 'Sixty 56');
      });
    },
  );

  test(
    'a page read during a move that answers after a later one is not shown',
    { timeout: 120_000 },
    async () => {
      await onNewPage('10.5.1.8', async (page) => {
        await openSixty(page);
        // the archive is held on its way, and so is the answer to the page read meanwhile
        const archive = await holdArchives(page);
        const [readAnswered, answered] = signal();
        const [releaseRead, readHeld] = signal();
        let held: Request | undefined;
        await page.route('**/api/messages?*', async (route) => {
          if (held || new URL(route.request().url()).searchParams.get('folder') !== 'Sixty')
            return route.continue();
          held = route.request();
          const response = await fetchHere(route);
          readAnswered();
          await readHeld;
          await route.fulfill({ response });
        });
        await page.keyboard.press('e');
        await answered;
        // new mail meanwhile: the read after the move shows it
        await imap.append('Sixty', plainMessage({ subject: 'Sixty late' }));
        archive.release();
        await row(page, 'Sixty late').waitFor();
        // the read from before comes back last, without it
        const lateRead = page.waitForResponse((r) => r.request() === held);
        releaseRead();
        await (await lateRead).finished();
        await page.evaluate('new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))');
        assert.equal(await row(page, 'Sixty late').count(), 1, 'the new message stays shown');
        assert.equal(await row(page, 'Sixty 60').count(), 0);
      });
    },
  );

  test('a page read before a star was set does not take it away', { timeout: 120_000 }, async () => {
    await onNewPage('10.5.1.6', async (page) => {
      await logInHere(page);
      const starred = async () =>
        /flagged, /.test(String(await row(page, 'Star me').getAttribute('aria-label')));
      await row(page, 'Star me').click();
      await page.getByRole('heading', { name: 'Star me' }).waitFor();
      const uid = Number(await row(page, 'Star me').getAttribute('data-uid'));
      // the next read of the list (another client changed the folder) is read by the server
      // at once, its answer held on its way; the reads asked for after it wait for the check
      // (none comes back in between to show the star again)
      const isListRead = (url: string) => {
        const u = new URL(url);
        return u.pathname === '/api/messages' && u.searchParams.get('folder') === 'INBOX';
      };
      const [readAsked, firstRead] = signal();
      const [releaseRead, readHeld] = signal();
      const [releaseLater, laterHeld] = signal();
      let held: Request | undefined;
      await page.route('**/api/messages?*', async (route) => {
        if (!isListRead(route.request().url())) return route.continue();
        if (held) {
          await laterHeld;
          return route.continue();
        }
        held = route.request();
        const response = await fetchHere(route);
        readAsked();
        await readHeld;
        await route.fulfill({ response });
      });
      const other = Number(await row(page, 'Read on the phone').getAttribute('data-uid'));
      await otherClientFlags(other, '\\Seen', true);
      await firstRead;
      // starred here meanwhile: the server sets it, and the row shows it
      await page.keyboard.press('s');
      await waitFor(starred, { what: 'Star me shown flagged' });
      // the read asked for before comes back, the message not flagged in it
      const lateRead = page.waitForResponse((r) => r.request() === held);
      releaseRead();
      await (await lateRead).finished();
      // two frames: time for the late answer to be read and drawn
      await page.evaluate('new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))');
      assert.ok(await starred(), 'the star stays shown');
      releaseLater();
      assert.ok((await storedFlags(imap, 'INBOX')).get('Star me')?.has('\\Flagged'), 'the server has it');
      // another client takes the star away after: a read from then on shows it so
      await otherClientFlags(uid, '\\Flagged', false);
      await waitFor(async () => !(await starred()), {
        what: 'the star taken away by the other client shown',
      });
    });
  });

  test('a flag the server could not set is not shown', { timeout: 120_000 }, async () => {
    await onNewPage('10.5.1.4', async (page) => {
      await logInHere(page);
      const uid = Number(await row(page, 'Filed by the phone').getAttribute('data-uid'));
      await row(page, 'Filed by the phone').click();
      await page.getByRole('heading', { name: 'Filed by the phone' }).waitFor();
      // another client (a phone's mail app) files it elsewhere while it is open here
      const lock = await imap.getMailboxLock('INBOX');
      try {
        await imap.messageMove(String(uid), 'Elsewhere', { uid: true });
      } finally {
        lock.release();
      }
      await page.keyboard.press('s');
      await page.getByRole('status').filter({ hasText: 'No such message in this folder' }).waitFor();
      const flag = page
        .getByRole('toolbar', { name: 'Message actions' })
        .getByRole('button', { name: /Flag/ });
      assert.equal(await flag.textContent(), '☆ Flag');
      assert.equal(await flag.getAttribute('aria-pressed'), 'false');
    });
  });
});
