// The message list in a real browser (Debian's Chromium through playwright-core) after
// messages leave it: in a long folder scrolled far down, a message deleted there leaves
// the rows near the top as they are (the pages loaded in between are not the list's own
// pages shifted up).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import type { Page } from 'playwright-core';
import { waitFor } from '@mailyard/testkit';
import { ensureFrontEnd, launchBrowser } from './browser.js';
import { storeSession } from './mail-clients.js';
import { plainMessage } from './messages.js';
import { ALICE, HOST, PASSWORD, startWebmailTestbed, type WebmailTestbed } from './webmail-harness.js';

let t: WebmailTestbed;
let origin: string;
let imap: ImapFlow;

/** Rows of the long folder: far more than the pages of 50 the list loads around the view. */
const LONG = 300;
const longSubject = (n: number) => `Long ${String(n).padStart(3, '0')}`;

before(async () => {
  ensureFrontEnd();
  t = await startWebmailTestbed();
  origin = `https://${HOST}:${t.webmail.port}`;
  imap = await storeSession(t, ALICE);
  await imap.mailboxCreate('Long');
  for (let n = 1; n <= LONG; n++)
    await imap.append('Long', plainMessage({ subject: longSubject(n) }), ['\\Seen']);
});
after(async () => {
  await imap?.logout();
  await t?.close();
});

const list = (page: Page) => page.getByRole('listbox', { name: 'Messages' });
const row = (page: Page, subject: string) => list(page).getByRole('option', { name: new RegExp(subject) });
async function logIn(page: Page): Promise<void> {
  await page.goto(`${origin}/`);
  await page.getByLabel('Email address').fill(ALICE);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('[data-folder="Long"]').waitFor();
}

describe('the webmail in a browser: the list after messages leave it', () => {
  test(
    'a message deleted far down a long folder leaves the rows above in place',
    { timeout: 120_000 },
    async () => {
      const browser = await launchBrowser(undefined, { clientAddress: '10.5.1.2' });
      const errors: string[] = [];
      try {
        const page = await browser.context.newPage();
        page.on('pageerror', (e) => errors.push(e.message));
        await logIn(page);
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
        assert.deepEqual(errors, []);
      } finally {
        await browser.close();
      }
    },
  );
});
