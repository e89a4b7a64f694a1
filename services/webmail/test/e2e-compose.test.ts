// Writing in a real browser (Debian's Chromium through playwright-core) while the draft is
// being saved: closing the editor when the draft cannot be saved keeps what was typed on
// screen; sending while saves wait in line leaves no draft behind. What the store holds
// afterwards is read back over IMAP. A message sent to some of its recipients only says
// whom it did not reach until the user dismisses it. Discarding a draft stops an upload
// under way, and nothing of it is kept.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import type { Page, Route } from 'playwright-core';
import { WebmailKeys } from '@mailyard/admin';
import { waitFor } from '@mailyard/testkit';
import { onNewPage } from './browser.js';
import { logIn, webmailFile } from './file-setup.js';
import { storedFlags, storeSession } from './mail-clients.js';
import { plainMessage } from './messages.js';
import { ALICE, BOB, type WebmailTestbed } from './webmail-harness.js';

let t: WebmailTestbed;
let origin: string;
let imap: ImapFlow;

webmailFile({ browser: true, store: ALICE }, async (f) => {
  ({ t, origin, imap } = f);
  await imap.append('INBOX', plainMessage({ subject: 'Something to read' }));
});

/** The text of each message in `folder` (a draft's or a message's source), read over IMAP. */
async function sources(folder: string, account = imap): Promise<string[]> {
  const lock = await account.getMailboxLock(folder);
  try {
    await account.noop();
    if (!account.mailbox || !account.mailbox.exists) return [];
    const out: string[] = [];
    for await (const m of account.fetch('1:*', { source: true })) out.push(m.source?.toString() ?? '');
    return out;
  } finally {
    lock.release();
  }
}

const editor = (page: Page) =>
  page.getByRole('dialog', { name: /./ }).filter({ has: page.locator('#compose-to') });

describe('the webmail in a browser: drafts while writing', () => {
  test('closing keeps the editor open when the draft cannot be saved', { timeout: 120_000 }, async () => {
    await onNewPage('10.6.1.1', async (page) => {
      await logIn(page, { at: origin });
      await page.getByRole('button', { name: 'Compose' }).click();
      // a name typed without its address yet: no draft can be made of it
      await page.locator('#compose-to').fill('Bob Sm');
      await page.locator('#compose-subject').fill('An hour of writing');
      await page.locator('#compose-text').fill('Every word of this matters.');
      await page.getByRole('button', { name: 'Close and keep the draft' }).click();
      const alert = editor(page).getByRole('alert');
      await alert.filter({ hasText: 'The draft could not be saved' }).waitFor();
      assert.match(String(await alert.textContent()), /not an address: Bob Sm/);
      assert.equal(await page.locator('#compose-text').inputValue(), 'Every word of this matters.');
      assert.deepEqual(await sources('Drafts'), []);

      // corrected, it closes, and the draft is kept
      await page.locator('#compose-to').fill(`Bob Smith <${BOB}>`);
      await page.getByRole('button', { name: 'Close and keep the draft' }).click();
      await page.getByRole('status').filter({ hasText: 'Draft saved' }).waitFor();
      assert.equal(await page.locator('#compose-to').count(), 0, 'the editor closed');
      const drafts = await waitFor(
        async () => ((await sources('Drafts')).length === 1 ? sources('Drafts') : null),
        {
          what: 'the draft in Drafts',
        },
      );
      assert.match(drafts[0]!, /Every word of this matters\./);
    });
  });

  test('sending while two saves wait in line leaves no draft behind', { timeout: 120_000 }, async () => {
    const bob = await storeSession(t, BOB);
    try {
      // the earlier test's draft, discarded through the store
      const lock = await imap.getMailboxLock('Drafts');
      try {
        await imap.messageDelete('1:*');
      } finally {
        lock.release();
      }
      await onNewPage('10.6.1.2', async (page) => {
        // the autosave's timer moves only when the test says so
        await page.clock.install();
        await logIn(page, { at: origin });
        // each save is held until the test lets it through, as a slow store would hold it
        const held: Route[] = [];
        await page.route('**/api/drafts', (route) => {
          held.push(route);
        });

        await page.getByRole('button', { name: 'Compose' }).click();
        await page.locator('#compose-to').fill(BOB);
        await page.locator('#compose-subject').fill('Written in a hurry');
        await page.locator('#compose-text').fill('First words.');
        await page.clock.runFor(2000);
        await waitFor(() => held.length === 1, { what: 'the first save under way' });
        // more typed: the next save waits for the first
        await page.locator('#compose-text').fill('First words. Last words.');
        await page.clock.runFor(2000);
        await page.getByRole('button', { name: 'Send' }).click();

        await held[0]!.continue();
        await waitFor(() => held.length === 2, { what: 'the second save under way' });
        const secondSaved = page.waitForResponse((r) => r.url().endsWith('/api/drafts'));
        await held[1]!.continue();
        await secondSaved;
        await page.getByRole('status').filter({ hasText: 'Message sent' }).waitFor();

        const got = await waitFor(
          async () => ((await sources('INBOX', bob)).length === 1 ? sources('INBOX', bob) : null),
          {
            what: 'the message at bob',
            timeoutMs: 30_000,
          },
        );
        assert.match(got[0]!, /First words\. Last words\./);
        assert.deepEqual(await sources('Drafts'), [], 'no draft left');
        assert.equal((await storedFlags(imap, 'Sent')).size, 1);
      });
    } finally {
      await bob.logout();
    }
  });

  test('discarding stops an upload under way: nothing of it is kept', { timeout: 120_000 }, async () => {
    await onNewPage('10.6.1.4', async (page) => {
      await logIn(page, { at: origin });
      // the upload is held until the test lets it through, as a slow connection would hold it
      const held: Route[] = [];
      await page.route('**/api/uploads', (route) => {
        held.push(route);
      });
      await page.getByRole('button', { name: 'Compose' }).click();
      await page.locator('#compose-to').fill(BOB);
      await page.locator('#compose-subject').fill('Never mind');
      const isUpload = (r: { url(): string }) => r.url().endsWith('/api/uploads');
      const ended = Promise.race([
        page.waitForEvent('requestfinished', isUpload),
        page.waitForEvent('requestfailed', isUpload),
      ]);
      await editor(page)
        .locator('input[type=file]')
        .setInputFiles({ name: 'report.pdf', mimeType: 'application/pdf', buffer: Buffer.alloc(50_000, 1) });
      await editor(page).getByLabel('Uploading report.pdf').waitFor();
      await waitFor(() => held.length === 1, { what: 'the upload under way' });
      await editor(page).getByRole('button', { name: 'Discard' }).click();
      await page.locator('#compose-to').waitFor({ state: 'detached' });
      // let it through: a request the page gave up on goes nowhere
      await held[0]!.continue().catch(() => undefined);
      await ended;
      // no upload waits under alice's cap, nor any draft
      const redis = t.p.redis.redis;
      await waitFor(async () => (await redis.zcard(WebmailKeys.uploads(ALICE))) === 0, {
        what: 'no upload waiting',
      });
      // this testbed's keys only: other files use the same Redis under prefixes of their own
      assert.equal((await redis.keys(`${t.p.redis.prefix}webmail:upload:*`)).length, 0);
      assert.deepEqual(await sources('Drafts'), []);
    });
  });

  test('who a message did not reach stays on screen until dismissed', { timeout: 120_000 }, async () => {
    await onNewPage('10.6.1.3', async (page) => {
      await page.clock.install();
      await logIn(page, { at: origin });
      await page.getByRole('button', { name: 'Compose' }).click();
      await page.locator('#compose-to').fill(`${BOB}, nobody@example.test`);
      await page.locator('#compose-subject').fill('To two, one unknown');
      await page.locator('#compose-text').fill('Hello both.');
      await page.getByRole('button', { name: 'Send' }).click();
      const notice = page.locator('.toast');
      await notice.filter({ hasText: 'Not sent to nobody@example.test: 550 5.1.1' }).waitFor();
      // a minute later, still there
      await page.clock.runFor(60_000);
      assert.match(String(await notice.textContent()), /Not sent to nobody@example\.test/);
      await notice.getByRole('button', { name: 'Dismiss' }).click();
      await waitFor(async () => (await notice.textContent()) === '', { what: 'the notice dismissed' });
    });
  });
});
