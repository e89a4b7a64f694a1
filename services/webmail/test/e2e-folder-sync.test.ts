// Folder changes reach every open tab without reload (a real browser: Debian's Chromium
// through playwright-core): a folder made, renamed and deleted in one tab shows in the
// other, whose open folder follows a rename and goes back to Inbox when deleted; the same
// for a change made by another IMAP client (imapflow). A level that only holds folders
// (\Noselect, made by that client) is listed as a group, never opened, and may hold a new
// folder.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import { waitFor } from '@mailyard/testkit';
import { launchBrowser } from './browser.js';
import { logIn, webmailFile, type WebmailFile } from './file-setup.js';
import { ALICE } from './webmail-harness.js';

let f: WebmailFile;
webmailFile({ browser: true, store: ALICE }, async (file) => {
  f = file;
});

const nav = (page: Page) => page.getByRole('navigation', { name: 'Folders' });
const folderLink = (page: Page, name: string) =>
  nav(page).getByRole('link', { name: new RegExp(`^${name}`) });
const status = (page: Page, text: string) => page.getByRole('status').filter({ hasText: text });
const heading = (page: Page, name: string) => page.getByRole('heading', { name: new RegExp(`^${name}`) });
const gone = (page: Page, name: string) =>
  waitFor(async () => (await folderLink(page, name).count()) === 0, { what: `${name} gone` });
/** The page's event stream is open: the server passes it the account's changes from now on. */
const streamOf = (page: Page) => page.waitForResponse((r) => new URL(r.url()).pathname === '/api/events');

/** Two tabs of one session, each marked so that a reload would show (the mark would be lost). */
async function twoTabs(fn: (acting: Page, other: Page) => Promise<void>): Promise<void> {
  const browser = await launchBrowser();
  const errors: string[] = [];
  try {
    const acting = await browser.context.newPage();
    const actingStream = streamOf(acting);
    await logIn(acting, { at: f.origin, ready: (p) => p.getByRole('button', { name: 'Compose' }) });
    const other = await browser.context.newPage();
    const otherStream = streamOf(other);
    await other.goto(`${f.origin}/`);
    for (const page of [acting, other]) {
      page.on('pageerror', (e) => errors.push(e.message));
      await page.getByRole('button', { name: 'Compose' }).waitFor();
      await page.evaluate('window.notReloaded = true');
    }
    // a change made before the tabs listen, or before the webmail's IMAP session that hears
    // of it is in place, would reach neither
    await Promise.all([actingStream, otherStream]);
    await waitFor(() => f.t.webmail.watching(ALICE), { what: 'the IDLE session', timeoutMs: 30_000 });
    await fn(acting, other);
    for (const page of [acting, other])
      assert.equal(await page.evaluate('window.notReloaded'), true, 'the tab was not reloaded');
    assert.deepEqual(errors, [], 'script errors on the pages');
  } finally {
    await browser.close();
  }
}

describe('folder changes in every tab', () => {
  test('made, renamed and deleted in one tab: the other follows', { timeout: 180_000 }, async () => {
    await twoTabs(async (acting, other) => {
      await acting.getByRole('button', { name: 'New folder' }).click();
      await acting.getByLabel('Folder name').fill('Clients');
      await acting.getByRole('button', { name: 'Create' }).click();
      await status(acting, 'Folder Clients created').waitFor();
      await folderLink(other, 'Clients').waitFor();

      // the other tab has it open: it follows the new name
      await folderLink(other, 'Clients').click();
      await heading(other, 'Clients').waitFor();
      await acting.getByRole('button', { name: 'Options for Clients' }).click();
      await acting.getByRole('button', { name: 'Rename Clients' }).click();
      await acting.getByLabel('New name for Clients').fill('Customers');
      await acting.keyboard.press('Enter');
      await status(acting, 'Folder renamed to Customers').waitFor();
      await heading(other, 'Customers').waitFor();
      await status(other, 'Folder Clients was renamed to Customers elsewhere').waitFor();
      assert.match(other.url(), /#folder=Customers$/);
      await gone(other, 'Clients');

      // deleted: the other tab goes to Inbox, saying why
      await folderLink(other, 'Customers').click();
      acting.once('dialog', (d) => void d.accept());
      await acting.getByRole('button', { name: 'Options for Customers' }).click();
      await acting.getByRole('button', { name: 'Delete Customers' }).click();
      await status(acting, 'Folder Customers deleted').waitFor();
      await heading(other, 'Inbox').waitFor();
      await status(other, 'Folder Customers was deleted elsewhere').waitFor();
      await gone(other, 'Customers');
      assert.equal(await other.getByRole('alert').count(), 0, 'no error shown');
      // the tab that made the changes is not told of them as news from elsewhere
      assert.equal(await status(acting, 'elsewhere').count(), 0);
    });
  });

  test('made, renamed and deleted by another IMAP client', { timeout: 180_000 }, async () => {
    await twoTabs(async (_, page) => {
      await f.imap.mailboxCreate('Travel');
      await folderLink(page, 'Travel').click();
      await heading(page, 'Travel').waitFor();
      await f.imap.mailboxRename('Travel', 'Trips');
      await heading(page, 'Trips').waitFor();
      await gone(page, 'Travel');
      await f.imap.mailboxDelete('Trips');
      await heading(page, 'Inbox').waitFor();
      await status(page, 'Folder Trips was deleted elsewhere').waitFor();
      await gone(page, 'Trips');
    });
  });

  test(
    'a level that only holds folders is a group and may hold a new one',
    { timeout: 180_000 },
    async () => {
      await twoTabs(async (acting, other) => {
        // made by another client without its parent: Projects is \Noselect
        await f.imap.mailboxCreate('Projects/2026');
        const group = nav(other).locator('[data-folder="Projects"]');
        await group.waitFor();
        await folderLink(other, '2026').waitFor();
        assert.equal(await folderLink(other, 'Projects').count(), 0, 'not a folder to open');
        await group.click();
        assert.doesNotMatch(other.url(), /#folder=Projects/);
        await heading(other, 'Inbox').waitFor();
        assert.equal(await other.getByRole('alert').count(), 0, 'no error shown');

        await acting.getByRole('button', { name: 'New folder' }).click();
        await acting.getByLabel('Folder name').fill('Plans');
        await acting.getByLabel('Inside').selectOption('Projects');
        await acting.getByRole('button', { name: 'Create' }).click();
        await status(acting, 'Folder Projects/Plans created').waitFor();
        await folderLink(other, 'Plans').waitFor();
        assert.ok((await f.imap.list()).some((f) => f.path === 'Projects/Plans'));
      });
    },
  );
});
