// Folders made, renamed and deleted in a real browser (Debian's Chromium through
// playwright-core): a new folder, the open folder renamed by keyboard (the view follows
// it), a folder with a message deleted after the question (the view goes to the inbox),
// the special-use folders offered neither, a name the store refuses said in the form, and
// the phone layout. Another IMAP client (imapflow) reads what the store holds afterwards.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import type { Page } from 'playwright-core';
import { waitFor } from '@mailyard/testkit';
import { launchBrowser, screenshotDir } from './browser.js';
import { logIn, webmailFile } from './file-setup.js';
import { plainMessage } from './messages.js';
import { ALICE } from './webmail-harness.js';

let origin: string;
let imap: ImapFlow;
const shots = screenshotDir();

webmailFile({ browser: true, screenshots: true, store: ALICE }, async (f) => {
  ({ origin, imap } = f);
  await imap.mailboxCreate('Receipts');
  await imap.append('Receipts', plainMessage({ subject: 'Train ticket' }));
});

const stored = async () => (await imap.list()).map((f) => f.path);
const nav = (page: Page) => page.getByRole('navigation', { name: 'Folders' });
const folderLink = (page: Page, name: string) =>
  nav(page).getByRole('link', { name: new RegExp(`^${name}`) });
const status = (page: Page, text: string) => page.getByRole('status').filter({ hasText: text });

/** Logged in; the inbox of this file's Alice is empty, so the list has no row to wait for. */
const login = (page: Page) =>
  logIn(page, { at: origin, ready: (p) => p.getByRole('button', { name: 'Compose' }) });

describe('folders in a browser', () => {
  test('made, the open one renamed, one deleted after asking', { timeout: 180_000 }, async () => {
    const browser = await launchBrowser();
    const errors: string[] = [];
    try {
      const page = await browser.context.newPage();
      page.on('pageerror', (e) => errors.push(e.message));
      await login(page);
      await folderLink(page, 'Receipts').waitFor();

      // the special-use folders have no options to rename or delete them
      for (const name of ['Inbox', 'Drafts', 'Sent', 'Archive', 'Junk', 'Trash']) {
        await folderLink(page, name).waitFor();
        assert.equal(await page.getByRole('button', { name: `Options for ${name}` }).count(), 0, name);
      }

      // a new folder; a name taken is refused in the form with the store's meaning
      await page.getByRole('button', { name: 'New folder' }).click();
      await page.getByLabel('Folder name').fill('Trash');
      await page.getByRole('button', { name: 'Create' }).click();
      await page.getByRole('alert').filter({ hasText: 'A folder of that name already exists' }).waitFor();
      await page.getByLabel('Folder name').fill('Projects');
      await page.getByRole('button', { name: 'Create' }).click();
      await status(page, 'Folder Projects created').waitFor();
      await folderLink(page, 'Projects').waitFor();
      assert.ok((await stored()).includes('Projects'));

      // the open folder renamed, by keyboard only: the view follows it
      await folderLink(page, 'Receipts').click();
      await page.getByRole('option', { name: /Train ticket/ }).waitFor();
      await page.getByRole('button', { name: 'Options for Receipts' }).focus();
      await page.keyboard.press('Enter');
      // the focus moves to the first option once the options are drawn
      await waitFor(
        async () =>
          (await page.evaluate("document.activeElement?.getAttribute('aria-label')")) === 'Rename Receipts',
        { what: 'the focus on Rename Receipts' },
      );
      await page.keyboard.press('Enter');
      // and to the name field once it is drawn
      const field = page.getByLabel('New name for Receipts');
      await waitFor(async () => await field.evaluate((e) => e === e.ownerDocument.activeElement), {
        what: 'the focus in the new name field',
      });
      await page.keyboard.type('Invoices');
      await page.screenshot({ path: join(shots, 'folders-rename.png'), animations: 'disabled' });
      await page.keyboard.press('Enter');
      await status(page, 'Folder renamed to Invoices').waitFor();
      await page.getByRole('heading', { name: /^Invoices/ }).waitFor();
      assert.match(page.url(), /#folder=Invoices$/);
      await page.getByRole('option', { name: /Train ticket/ }).waitFor();
      await waitFor(async () => (await folderLink(page, 'Receipts').count()) === 0, {
        what: 'Receipts gone',
      });
      const folders = await stored();
      assert.ok(folders.includes('Invoices') && !folders.includes('Receipts'), String(folders));
      // STATUS, not SELECT: the store ends a session whose selected folder is deleted
      const moved = await imap.status('Invoices', { messages: true });
      assert.equal(moved && moved.messages, 1, 'the message moved with it');

      // deleting asks first, saying what goes; "no" keeps it
      const asked: string[] = [];
      page.once('dialog', (d) => {
        asked.push(d.message());
        void d.dismiss();
      });
      await page.getByRole('button', { name: 'Options for Invoices' }).click();
      await page.getByRole('button', { name: 'Delete Invoices' }).click();
      await waitFor(async () => asked.length === 1, { what: 'the question' });
      assert.equal(asked[0], 'Delete the folder "Invoices" and its 1 message? This cannot be undone.');
      assert.ok((await stored()).includes('Invoices'));
      await folderLink(page, 'Invoices').waitFor();

      page.once('dialog', (d) => void d.accept());
      await page.getByRole('button', { name: 'Options for Invoices' }).click();
      await page.getByRole('button', { name: 'Delete Invoices' }).click();
      await status(page, 'Folder Invoices deleted').waitFor();
      await page.getByRole('heading', { name: /^Inbox/ }).waitFor();
      await waitFor(async () => (await folderLink(page, 'Invoices').count()) === 0, {
        what: 'Invoices gone',
      });
      assert.ok(!(await stored()).includes('Invoices'));
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  });

  test('on a phone', { timeout: 120_000 }, async () => {
    await imap.mailboxCreate('On the road');
    const browser = await launchBrowser({ width: 390, height: 844 });
    try {
      const page = await browser.context.newPage();
      await login(page);
      await page.getByRole('button', { name: 'Folders', exact: true }).click();
      await page.getByRole('button', { name: 'Options for On the road' }).click();
      const remove = page.getByRole('button', { name: 'Delete On the road' });
      const box = await remove.boundingBox();
      assert.ok(box && box.x + box.width <= 390 && box.height >= 32, JSON.stringify(box));
      await page.screenshot({ path: join(shots, 'phone-folders.png'), animations: 'disabled' });
      page.once('dialog', (d) => void d.accept());
      await remove.click();
      await status(page, 'Folder On the road deleted').waitFor();
      assert.ok(!(await stored()).includes('On the road'));
    } finally {
      await browser.close();
    }
  });
});
