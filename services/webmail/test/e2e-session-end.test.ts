// The session ends while a message is being written (signed out everywhere from another
// computer, the server's sessions gone), in a real browser (Debian's Chromium through
// playwright-core): the editor keeps what was typed, a login over it lets the user go on,
// and the draft or the message goes from the account it was written in, never another.
// What the store holds afterwards is read back over IMAP.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import type { Page } from 'playwright-core';
import { generate } from 'otplib';
import { LoginGuard, TwoFactor } from '@mailyard/auth';
import { waitFor } from '@mailyard/testkit';
import { addAccount } from '../../../test/harness.js';
import { SESSION_COOKIE } from '../src/sessions.js';
import { launchBrowser, onNewPage } from './browser.js';
import { loggedIn, logIn, webmailFile } from './file-setup.js';
import { storeSession } from './mail-clients.js';
import { ALICE, BOB, HOST, PASSWORD, type WebmailTestbed } from './webmail-harness.js';

let t: WebmailTestbed;
let origin: string;

webmailFile({ browser: true }, async (f) => {
  ({ t, origin } = f);
});

/** `account` (Alice unless said) logs in and starts a message to `to` about `subject`. */
async function startWriting(
  page: Page,
  to: string,
  subject: string,
  at = origin,
  account = ALICE,
  code?: () => Promise<string>,
): Promise<void> {
  const compose = (p: Page) => p.getByRole('button', { name: 'Compose' });
  await logIn(page, { at, account, code, ready: compose });
  await compose(page).click();
  await page.locator('#compose-to').fill(to);
  await page.locator('#compose-subject').fill(subject);
}

/**
 * `fn` on the folder of an IMAP session of its own (signing out everywhere ends the
 * account's IMAP sessions too).
 */
async function inFolder<T>(account: string, folder: string, fn: (imap: ImapFlow) => Promise<T>): Promise<T> {
  const imap = await storeSession(t, account);
  try {
    const lock = await imap.getMailboxLock(folder);
    try {
      return await fn(imap);
    } finally {
      lock.release();
    }
  } finally {
    await imap.logout();
  }
}

/** The source of each message in `folder`, read over IMAP. */
const sources = (account: string, folder: string) =>
  inFolder(account, folder, async (imap) => {
    if (!imap.mailbox || !imap.mailbox.exists) return [];
    const out: string[] = [];
    for await (const m of imap.fetch('1:*', { source: true })) out.push(m.source?.toString() ?? '');
    return out;
  });

const clear = (account: string, folder: string) =>
  inFolder(account, folder, async (imap) => {
    if (imap.mailbox && imap.mailbox.exists) await imap.messageDelete('1:*');
  });

/** Every webmail session of Alice ends, as "sign out everywhere" on another computer ends them. */
async function signOutEverywhere(): Promise<void> {
  const other = await loggedIn(t, ALICE);
  assert.equal((await other.post('/api/account/sign-out-everywhere')).status, 200);
}

const signInAgain = (page: Page) => page.getByRole('dialog', { name: 'Your session has ended' });
const status = (page: Page) => page.locator('.compose-status');

/** Ends the browser's webmail session as a server that lost its sessions would: its Redis key gone. */
async function dropSession(page: Page): Promise<void> {
  const cookie = (await page.context().cookies()).find((c) => c.name === SESSION_COOKIE);
  assert.ok(cookie, 'the session cookie');
  const key = `webmail:session:${createHash('sha256').update(cookie.value).digest('base64url')}`;
  assert.equal(await t.p.redis.redis.del(key), 1);
}

describe('the webmail in a browser: the session ends while writing', () => {
  test(
    'what was typed stays, and after the login again the draft is saved in the same account',
    { timeout: 120_000 },
    async () => {
      await clear(ALICE, 'Drafts');
      await onNewPage('10.6.9.1', async (page) => {
        await startWriting(page, BOB, 'The long letter');
        await page.locator('#compose-text').fill('The first page.');
        await status(page).filter({ hasText: 'Draft saved' }).waitFor();

        await signOutEverywhere();
        const full = 'The first page.\nThe second page, written after the session ended.';
        await page.locator('#compose-text').fill(full);
        // the autosave is refused: the login comes over the editor, which keeps every word
        const dialog = signInAgain(page);
        await dialog.waitFor();
        assert.equal(await page.locator('#compose-text').inputValue(), full);
        assert.equal(await page.locator('#compose-to').inputValue(), BOB);
        assert.equal(await page.locator('#compose-subject').inputValue(), 'The long letter');
        assert.equal(await dialog.getByLabel('Email address').inputValue(), ALICE);

        // put aside: the editor says why nothing is saved; Send asks for the login again
        await dialog.getByRole('button', { name: 'Not now' }).click();
        await dialog.waitFor({ state: 'detached' });
        await page.getByRole('alert').filter({ hasText: 'Your session has ended' }).waitFor();
        await page.locator('#compose-text').fill(full + '\nThe third page.');
        await page.getByRole('button', { name: 'Send' }).click();
        await dialog.waitFor();

        await dialog.getByLabel('Password').fill(PASSWORD);
        await dialog.getByRole('button', { name: 'Log in' }).click();
        await dialog.waitFor({ state: 'detached' });
        await status(page).filter({ hasText: 'Draft saved' }).waitFor();
        // the draft saved before the session ended is replaced by this one
        const drafts = await waitFor(
          async () => {
            const all = await sources(ALICE, 'Drafts');
            return all.length === 1 && /The third page\./.test(all[0]!) ? all : null;
          },
          { what: 'the whole text in Alice’s Drafts' },
        );
        assert.match(drafts[0]!, /The first page\.\r?\nThe second page, written after the session ended\./);
        assert.match(drafts[0]!, /Subject: The long letter/);
        // nothing was sent meanwhile
        assert.deepEqual(await sources(BOB, 'INBOX'), []);
      });
    },
  );

  test(
    'another account logging in over the editor is refused, and gets none of the text',
    { timeout: 120_000 },
    async () => {
      await clear(ALICE, 'Drafts');
      await clear(BOB, 'Drafts');
      await onNewPage('10.6.9.2', async (page) => {
        await startWriting(page, 'carol@example.net', 'For Alice’s eyes');
        // the server's sessions are gone (its Redis emptied of them)
        await dropSession(page);
        await page.locator('#compose-text').fill('Private words.');

        const dialog = signInAgain(page);
        await dialog.waitFor();
        await dialog.getByLabel('Email address').fill(BOB);
        await dialog.getByLabel('Password').fill(PASSWORD);
        await dialog.getByRole('button', { name: 'Log in' }).click();
        await dialog
          .getByRole('alert')
          .filter({ hasText: `${BOB} is not the account this message is written from` })
          .waitFor();
        assert.equal(await page.locator('#compose-text').inputValue(), 'Private words.');
        // Bob is not logged in: the browser holds no session
        const session = await page.evaluate(
          "fetch('/api/session', { headers: { accept: 'application/json' } }).then((r) => r.json())",
        );
        assert.equal((session as { authenticated: boolean }).authenticated, false);

        // Alice logs in: the draft is hers
        await dialog.getByLabel('Email address').fill(ALICE);
        await dialog.getByLabel('Password').fill(PASSWORD);
        await dialog.getByRole('button', { name: 'Log in' }).click();
        await dialog.waitFor({ state: 'detached' });
        await status(page).filter({ hasText: 'Draft saved' }).waitFor();
        const drafts = await waitFor(
          async () => ((await sources(ALICE, 'Drafts')).length === 1 ? sources(ALICE, 'Drafts') : null),
          { what: 'the draft in Alice’s Drafts' },
        );
        assert.match(drafts[0]!, /Private words\./);
        assert.deepEqual(await sources(BOB, 'Drafts'), []);
      });
    },
  );

  test(
    'attachments uploaded before and refused after the end go with the message sent after the login',
    { timeout: 120_000 },
    async () => {
      await clear(BOB, 'INBOX');
      await onNewPage('10.6.9.3', async (page) => {
        await startWriting(page, BOB, 'Both files');
        await page.locator('#compose-text').fill('Here they are.');
        const attach = page.locator('.compose input[type=file]');
        await attach.setInputFiles({
          name: 'before.txt',
          mimeType: 'text/plain',
          buffer: Buffer.from('one'),
        });
        await page.locator('.files li').filter({ hasText: 'before.txt' }).locator('.file-size').waitFor();

        await signOutEverywhere();
        await page.getByRole('button', { name: 'Send' }).click();
        const dialog = signInAgain(page);
        await dialog.waitFor();
        await dialog.getByRole('button', { name: 'Not now' }).click();
        await attach.setInputFiles({ name: 'after.txt', mimeType: 'text/plain', buffer: Buffer.from('two') });
        await dialog.waitFor();
        await page
          .locator('.files li')
          .filter({ hasText: 'after.txt' })
          .getByText('Not uploaded yet')
          .waitFor();

        await dialog.getByLabel('Password').fill(PASSWORD);
        await dialog.getByRole('button', { name: 'Log in' }).click();
        await dialog.waitFor({ state: 'detached' });
        await page.locator('.files li').filter({ hasText: 'after.txt' }).locator('.file-size').waitFor();
        await page.getByRole('button', { name: 'Send' }).click();
        await page.getByRole('status').filter({ hasText: 'Message sent' }).waitFor();
        const got = await waitFor(
          async () => ((await sources(BOB, 'INBOX')).length === 1 ? sources(BOB, 'INBOX') : null),
          { what: 'the message in Bob’s inbox', timeoutMs: 30_000 },
        );
        assert.match(got[0]!, /Here they are\./);
        assert.match(got[0]!, /filename="?before\.txt/);
        assert.match(got[0]!, /filename="?after\.txt/);
      });
    },
  );

  test(
    'the login over the editor asks for the second step of an account that has one',
    { timeout: 120_000 },
    async () => {
      const ERIN = 'erin@example.test';
      await addAccount(t.p.directory, ERIN);
      let clock = Date.now();
      const redis = t.p.redis.redis;
      const wm = await t.another(
        {},
        { twoFactor: new TwoFactor(redis, new LoginGuard(redis), { issuer: HOST, now: () => clock }) },
      );
      const c = await loggedIn(t, ERIN, wm.port);
      const begin = await c.post('/api/account/two-factor/begin', { password: PASSWORD });
      const secret = String(begin.json.secret);
      const code = () => {
        clock += 30_000;
        return generate({ secret, epoch: Math.floor(clock / 1000) });
      };
      assert.equal((await c.post('/api/account/two-factor/confirm', { code: await code() })).status, 200);

      await onNewPage('10.6.9.4', async (page) => {
        await startWriting(page, BOB, 'Two steps', `https://${HOST}:${wm.port}`, ERIN, code);
        await page.locator('#compose-text').fill('Kept through both steps.');
        await status(page).filter({ hasText: 'Draft saved' }).waitFor();
        await dropSession(page);
        await page.locator('#compose-text').fill('Kept through both steps, and more.');
        const dialog = page.locator('.sign-in-again [role=dialog]');
        await dialog.waitFor();
        await dialog.getByLabel('Password').fill(PASSWORD);
        await dialog.getByRole('button', { name: 'Log in' }).click();
        await dialog.getByRole('heading', { name: 'One more step' }).waitFor();
        await dialog.getByLabel('Code').fill(await code());
        await dialog.getByRole('button', { name: 'Verify' }).click();
        await dialog.waitFor({ state: 'detached' });
        await status(page).filter({ hasText: 'Draft saved' }).waitFor();
        const drafts = await waitFor(
          async () => {
            const all = await sources(ERIN, 'Drafts');
            return all.length === 1 && /and more\./.test(all[0]!) ? all : null;
          },
          { what: 'the whole text in Erin’s Drafts' },
        );
        assert.match(drafts[0]!, /Kept through both steps, and more\./);
      });
    },
  );
  /**
   * Alice writes `subject` to Bob in a browser of her own, its draft saved; then the session
   * ends and a second tab of the same browser logs in again (a new cookie and token), and
   * `fn` goes on in the first tab's editor, which must never ask for a reload or a login.
   * The session ends as on a server that lost it: signed out everywhere, the IMAP sessions
   * would end too, and the first tab's list, read again then, could learn of the end before
   * the second tab has logged in, and rightly ask for the login over the editor.
   */
  async function afterLoginInAnotherTab(
    clientAddress: string,
    subject: string,
    fn: (writing: Page) => Promise<void>,
  ): Promise<void> {
    const browser = await launchBrowser(undefined, { clientAddress });
    const errors: string[] = [];
    try {
      const writing = await browser.context.newPage();
      writing.on('pageerror', (e) => errors.push(e.message));
      await startWriting(writing, BOB, subject);
      await writing.locator('#compose-text').fill('Before the other tab.');
      await status(writing).filter({ hasText: 'Draft saved' }).waitFor();

      await dropSession(writing);
      const other = await browser.context.newPage();
      await logIn(other, { at: origin, ready: (p) => p.getByRole('button', { name: 'Compose' }) });

      await fn(writing);
      assert.equal(await writing.getByText('reload').count(), 0);
      assert.equal(await signInAgain(writing).count(), 0);
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  }

  test(
    'after a login again in another tab, this tab’s editor saves with the new session, no reload asked',
    { timeout: 120_000 },
    async () => {
      await clear(ALICE, 'Drafts');
      await afterLoginInAnotherTab('10.6.9.5', 'Across tabs', async (writing) => {
        await writing.locator('#compose-text').fill('Before the other tab, and after it.');
        const drafts = await waitFor(
          async () => {
            const all = await sources(ALICE, 'Drafts');
            return all.length === 1 && /and after it\./.test(all[0]!) ? all : null;
          },
          { what: 'the text written after the other tab’s login in Alice’s Drafts', timeoutMs: 30_000 },
        );
        assert.match(drafts[0]!, /Subject: Across tabs/);
        await status(writing).filter({ hasText: 'Draft saved' }).waitFor();
      });
    },
  );

  test(
    'after a login again in another tab, a file attached in this tab’s editor is uploaded and sent',
    { timeout: 120_000 },
    async () => {
      await clear(BOB, 'INBOX');
      await afterLoginInAnotherTab('10.6.9.6', 'Attached across tabs', async (writing) => {
        // the first request of this tab since the other tab's login is the upload
        await writing
          .locator('.compose input[type=file]')
          .setInputFiles({ name: 'later.txt', mimeType: 'text/plain', buffer: Buffer.from('three') });
        const file = writing.locator('.files li').filter({ hasText: 'later.txt' });
        await file.locator('.file-size').or(file.getByRole('alert')).waitFor();
        assert.equal(await file.getByRole('alert').count(), 0, await file.innerText());

        await writing.getByRole('button', { name: 'Send' }).click();
        await writing.getByRole('status').filter({ hasText: 'Message sent' }).waitFor();
        const got = await waitFor(
          async () => ((await sources(BOB, 'INBOX')).length === 1 ? sources(BOB, 'INBOX') : null),
          { what: 'the message in Bob’s inbox', timeoutMs: 30_000 },
        );
        assert.match(got[0]!, /Subject: Attached across tabs/);
        assert.match(got[0]!, /filename="?later\.txt/);
      });
    },
  );
});
