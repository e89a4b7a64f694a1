// Several messages at once in a real browser (Debian's Chromium through playwright-core):
// ticking every loaded row and none again, ticking a range with Shift and one more with
// Ctrl, moving three to a folder and marking two others read, ticking by keyboard. What
// the store holds afterwards is read back over IMAP.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import type { Page } from 'playwright-core';
import { waitFor } from '@mailyard/testkit';
import { sendRaw } from '../../retrieval/test/helpers.js';
import { launchBrowser, screenshotDir } from './browser.js';
import { logIn, webmailFile } from './file-setup.js';
import { storedFlags } from './mail-clients.js';
import { plainMessage } from './messages.js';
import { ALICE, type WebmailTestbed } from './webmail-harness.js';

let t: WebmailTestbed;
let origin: string;
let imap: ImapFlow;
const shots = screenshotDir();

// oldest first: the list shows them the other way round
const SUBJECTS = ['Keep unread', 'Read me 1', 'Read me 2', 'Move me 1', 'Move me 2', 'Move me 3'];

webmailFile({ browser: true, screenshots: true, store: ALICE }, async (f) => {
  ({ t, origin, imap } = f);
  for (const subject of SUBJECTS) await sendRaw(t.p, ALICE, plainMessage({ subject }));
  await imap.mailboxCreate('Projects');
});

const list = (page: Page) => page.getByRole('listbox', { name: 'Messages' });
const row = (page: Page, subject: string) => list(page).getByRole('option', { name: new RegExp(subject) });
const tick = (page: Page, subject: string) => page.getByLabel(`Select: ${subject}`, { exact: true });
const bar = (page: Page) => page.getByRole('toolbar', { name: 'Selected messages' });

describe('the webmail in a browser: several messages at once', () => {
  test('move three to a folder, mark two others read', { timeout: 180_000 }, async () => {
    const browser = await launchBrowser();
    const errors: string[] = [];
    try {
      const page = await browser.context.newPage();
      page.on('pageerror', (e) => errors.push(e.message));
      await logIn(page, { at: origin, ready: (p) => row(p, 'Keep unread') });

      // every loaded row, then none
      const all = page.getByLabel('Select all loaded messages');
      await all.check();
      await bar(page).getByText('6 selected').waitFor();
      assert.equal(await list(page).locator('[aria-checked="true"]').count(), 6);
      await all.uncheck();
      await waitFor(async () => (await list(page).locator('[aria-checked="true"]').count()) === 0, {
        what: 'no row ticked',
      });
      assert.equal(await bar(page).getByRole('button', { name: 'Mark read' }).count(), 0);

      // a range: the first box, then Shift on the third
      await tick(page, 'Move me 3').click();
      await tick(page, 'Move me 1').click({ modifiers: ['Shift'] });
      await bar(page).getByText('3 selected').waitFor();
      for (const s of ['Move me 1', 'Move me 2', 'Move me 3'])
        assert.equal(await tick(page, s).isChecked(), true, s);
      assert.equal(await tick(page, 'Read me 2').isChecked(), false);
      await page.screenshot({ path: join(shots, 'bulk-selection.png'), animations: 'disabled' });

      await bar(page).getByLabel('Move to folder').selectOption({ label: 'Projects' });
      await page.getByRole('status').filter({ hasText: 'Moved 3 messages to Projects' }).waitFor();
      const projects = await waitFor(
        async () => {
          const m = await storedFlags(imap, 'Projects');
          return m.size === 3 ? m : null;
        },
        { what: 'three messages in Projects' },
      );
      assert.deepEqual([...projects.keys()].sort(), ['Move me 1', 'Move me 2', 'Move me 3']);
      for (const [s, flags] of projects) assert.ok(!flags.has('\\Seen'), `${s} moved as it was, unread`);
      // gone from the list, and nothing ticked any more
      await waitFor(async () => (await row(page, 'Move me').count()) === 0, { what: 'the moved rows gone' });
      assert.equal(
        await bar(page)
          .getByText(/selected/)
          .count(),
        0,
      );

      // one with Ctrl on the row (which does not open it), one by its box
      await row(page, 'Read me 2').click({ modifiers: ['Control'] });
      await tick(page, 'Read me 1').click();
      await bar(page).getByText('2 selected').waitFor();
      assert.equal(await page.getByRole('heading', { name: 'Read me 2' }).count(), 0, 'not opened');
      await bar(page).getByRole('button', { name: 'Mark read' }).click();
      await page.getByRole('status').filter({ hasText: 'Marked 2 messages read' }).waitFor();
      const inbox = await waitFor(
        async () => {
          const m = await storedFlags(imap, 'INBOX');
          return m.get('Read me 1')?.has('\\Seen') && m.get('Read me 2')?.has('\\Seen') ? m : null;
        },
        { what: 'the two marked read' },
      );
      assert.deepEqual([...inbox.keys()].sort(), ['Keep unread', 'Read me 1', 'Read me 2']);
      assert.ok(!inbox.get('Keep unread')!.has('\\Seen'), 'the other one still unread');
      // the list shows it, with nothing ticked
      await waitFor(
        async () => !/^Unread/.test((await row(page, 'Read me 1').getAttribute('aria-label')) ?? 'Unread'),
        { what: 'the row shown read' },
      );
      assert.match((await row(page, 'Keep unread').getAttribute('aria-label')) ?? '', /^Unread/);
      assert.equal(await list(page).locator('[aria-checked="true"]').count(), 0);
      await page.screenshot({ path: join(shots, 'bulk-done.png'), animations: 'disabled' });

      // by keyboard: j to the first row, x ticks it, Esc clears the ticks
      await page.keyboard.press('j');
      // x acts on the row selected: once j has selected it
      await waitFor(async () => (await row(page, 'Read me 2').getAttribute('aria-selected')) === 'true', {
        what: 'Read me 2 selected',
      });
      await page.keyboard.press('x');
      await bar(page).getByText('1 selected').waitFor();
      assert.equal(await tick(page, 'Read me 2').isChecked(), true);
      await page.keyboard.press('Escape');
      await waitFor(async () => (await list(page).locator('[aria-checked="true"]').count()) === 0, {
        what: 'the ticks cleared',
      });
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  });
});
