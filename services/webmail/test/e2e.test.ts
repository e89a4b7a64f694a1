// The webmail in a real browser (Debian's Chromium through playwright-core) against the
// platform composed in this process: mail arriving by SMTP shows up without a reload, a
// reply with an attachment reaches the other mailbox (read back over IMAP), spam goes to
// Junk with its reason, drag and drop moves, logout ends the session; an HTML message's
// remote content is not fetched until allowed (a real HTTP server counts the requests);
// a link to a place in a message stays in its frame.
// Screenshots of the main screens, desktop and phone size, are written to
// WEBMAIL_SCREENSHOTS_DIR (docs/screenshots refreshes the ones in the docs).
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';
import type { BrowserContext, Page } from 'playwright-core';
import { waitFor } from '@mailyard/testkit';
import { sendRaw } from '../../retrieval/test/helpers.js';
import { launchBrowser, screenshotDir } from './browser.js';
import { logIn, webmailFile } from './file-setup.js';
import { storeSession } from './mail-clients.js';
import { newsletter, plainMessage } from './messages.js';
import { ALICE, BOB, PASSWORD, type WebmailTestbed } from './webmail-harness.js';

let t: WebmailTestbed;
let origin: string;
const shots = screenshotDir();

webmailFile({ browser: true, screenshots: true }, async (f) => {
  ({ t, origin } = f);
  await sendRaw(
    t.p,
    ALICE,
    plainMessage({
      subject: 'Team lunch on Friday',
      from: '"Carol Jones" <carol@remote.example>',
      body: 'Shall we try the new place on Main Street?',
    }),
  );
  await sendRaw(
    t.p,
    ALICE,
    plainMessage({
      subject: 'Quarterly report draft',
      from: '"Dan Miller" <dan@remote.example>',
      body: 'Attached you find nothing yet.',
    }),
  );
  await sendRaw(
    t.p,
    ALICE,
    plainMessage({ subject: 'Drag me to the archive', from: '"Eve Adams" <eve@remote.example>' }),
  );
});

const row = (page: Page, text: string | RegExp) =>
  page.getByRole('listbox', { name: 'Messages' }).getByRole('option', { name: text });
const folderLink = (page: Page, name: string) =>
  page.getByRole('navigation', { name: 'Folders' }).getByRole('link', { name: new RegExp(`^${name}`) });

/** An HTML message to alice, as a sender writes it. */
const htmlMail = (from: string, subject: string, html: string) =>
  [
    `From: ${from}`,
    `To: ${ALICE}`,
    `Subject: ${subject}`,
    'Date: Mon, 6 Jan 2025 10:00:00 +0000',
    'MIME-Version: 1.0',
    'Content-Type: text/html; charset=utf-8',
    '',
    html,
    '',
  ].join('\r\n');

/** Every request the browser makes, to check none leaves the webmail's own origin. */
function watchRequests(context: BrowserContext): string[] {
  const urls: string[] = [];
  context.on('request', (r) => urls.push(r.url()));
  return urls;
}

describe('a day with the webmail', () => {
  test('receive, read, reply with an attachment, spam, drag, log out', { timeout: 240_000 }, async () => {
    const browser = await launchBrowser();
    const errors: string[] = [];
    try {
      const page = await browser.context.newPage();
      page.on('pageerror', (e) => errors.push(e.message));
      const requests = watchRequests(browser.context);

      await page.goto(`${origin}/`);
      await page.getByRole('heading', { name: 'Log in to your mail' }).waitFor();
      await page.screenshot({ path: join(shots, 'login.png'), animations: 'disabled' });
      await logIn(page, { at: origin });

      // new mail by SMTP appears without a reload
      await waitFor(() => t.webmail.watching(ALICE), { what: 'the IDLE session', timeoutMs: 30_000 });
      const smtp = nodemailer.createTransport({
        host: '127.0.0.1',
        port: t.p.inbound.port,
        secure: false,
        ignoreTLS: true,
      });
      await smtp.sendMail({
        from: `"Bob Smith" <${BOB}>`,
        to: ALICE,
        subject: 'Hello from Bob',
        text: 'Could you send me the figures for March?\n\nThanks, Bob',
        messageId: '<hello-from-bob@example.test>',
      });
      smtp.close();
      // the notice goes after five seconds: looked for from now on, not once the row has come
      await Promise.all([
        row(page, /Hello from Bob/).waitFor({ timeout: 30_000 }),
        page.getByRole('status').filter({ hasText: 'New mail' }).waitFor({ timeout: 30_000 }),
      ]);
      await page.screenshot({ path: join(shots, 'inbox.png'), animations: 'disabled' });

      // open it
      await row(page, /Hello from Bob/).click();
      await page.getByRole('heading', { name: 'Hello from Bob' }).waitFor();
      const body = page.frameLocator('iframe[title="Message body"]');
      await body.getByText('Could you send me the figures for March?').waitFor();
      await page.screenshot({ path: join(shots, 'message.png'), animations: 'disabled' });

      // reply with an attachment
      await page.getByRole('button', { name: 'Reply', exact: true }).click();
      const compose = page.getByRole('dialog', { name: /Re: Hello from Bob/ });
      await compose.waitFor();
      assert.equal(await compose.getByLabel('To').inputValue(), `"Bob Smith" <${BOB}>`);
      await compose.getByRole('textbox', { name: 'Message' }).press('Control+Home');
      await compose.getByRole('textbox', { name: 'Message' }).pressSequentially('Here they are.');
      await compose.locator('input[type=file]').setInputFiles({
        name: 'march-figures.csv',
        mimeType: 'text/csv',
        buffer: Buffer.from('month,revenue\nMarch,1234\n'),
      });
      await compose.getByText('march-figures.csv').waitFor();
      await compose.getByText(/^\d+ B$/).waitFor();
      await page.screenshot({ path: join(shots, 'compose.png'), animations: 'disabled' });
      await compose.getByRole('button', { name: 'Send' }).click();
      await page.getByRole('status').filter({ hasText: 'Message sent' }).waitFor();

      // the reply is in bob's mailbox, read over IMAP with bob's own login
      const imap = new ImapFlow({
        host: '127.0.0.1',
        port: t.retrieval.ports.imaps,
        secure: true,
        tls: { rejectUnauthorized: false },
        auth: { user: BOB, pass: PASSWORD },
        logger: false,
      });
      await imap.connect();
      try {
        const raw = await waitFor(
          async () => {
            const lock = await imap.getMailboxLock('INBOX');
            try {
              for await (const m of imap.fetch('1:*', { source: true })) {
                const text = m.source?.toString() ?? '';
                if (text.includes('Subject: Re: Hello from Bob')) return text;
              }
              return null;
            } finally {
              lock.release();
            }
          },
          { what: "the reply in bob's INBOX", timeoutMs: 20_000 },
        );
        assert.match(raw, /^In-Reply-To: <hello-from-bob@example\.test>/m);
        assert.match(raw, /filename=march-figures\.csv/);
        assert.match(raw, /Here they are\./);
      } finally {
        await imap.logout();
      }

      // mark it spam: it moves to Junk, where the reason is shown
      await row(page, /Hello from Bob/).click();
      await page.getByRole('heading', { name: 'Hello from Bob' }).waitFor();
      await page.getByRole('button', { name: 'Spam', exact: true }).click();
      await page.getByRole('status').filter({ hasText: 'Marked as spam and moved to Junk' }).waitFor();
      await row(page, /Hello from Bob/).waitFor({ state: 'detached' });
      // and one the filter put there, with the policy service's reasons in its header
      const filed = await storeSession(t, ALICE);
      await filed.append(
        'Junk',
        plainMessage({
          subject: 'You have won a prize',
          from: '"Prize Office" <winner@lottery.example>',
          extra: [
            'X-Mailyard-Policy: junk; rspamd=spam (score 14.2, BAYES_SPAM); spf=fail (192.0.2.7 not permitted)',
          ],
        }),
      );
      await filed.logout();
      await folderLink(page, 'Junk').click();
      await row(page, /Hello from Bob/).click();
      const reasons = page.getByRole('region', { name: 'Why is this in Junk?' });
      await reasons.getByText('You marked it as spam.').waitFor();
      await row(page, /You have won a prize/).click();
      await reasons.getByText('Spam filter').waitFor();
      await reasons.getByText(/spam \(score 14\.2, BAYES_SPAM\)/).waitFor();
      await reasons.getByText(/Sender address check \(SPF\)/).waitFor();
      await page.screenshot({ path: join(shots, 'junk.png'), animations: 'disabled' });

      // drag a message from the inbox onto Archive
      await folderLink(page, 'Inbox').click();
      await row(page, /Drag me to the archive/).waitFor();
      // the row goes at the drop, the message once the server has moved it, which the
      // notice says (for five seconds: looked for from the drop on)
      const moved = page.getByRole('status').filter({ hasText: 'Moved to Archive' }).waitFor();
      await row(page, /Drag me to the archive/).dragTo(page.locator('[data-folder="Archive"]'));
      await row(page, /Drag me to the archive/).waitFor({ state: 'detached' });
      await moved;
      await folderLink(page, 'Archive').click();
      await row(page, /Drag me to the archive/).waitFor();

      // keyboard: j moves down, s flags, ? shows the shortcuts
      await folderLink(page, 'Inbox').click();
      await row(page, /Team lunch/).waitFor();
      await page.locator('body').press('j');
      // s flags the row selected: once j has selected it
      await page.getByRole('listbox', { name: 'Messages' }).locator('[aria-selected="true"]').waitFor();
      await page.keyboard.press('s');
      await page
        .getByRole('listbox', { name: 'Messages' })
        .getByRole('option', { name: /^flagged|, flagged, /i })
        .first()
        .waitFor();
      await page.keyboard.press('?');
      await page.getByRole('dialog', { name: 'Keyboard shortcuts' }).waitFor();
      await page.keyboard.press('Escape');

      // log out: the login page again, and the session is gone on the server
      await page.getByRole('button', { name: 'Log out' }).click();
      await page.getByRole('heading', { name: 'Log in to your mail' }).waitFor();
      const status = await page.evaluate(async () => (await fetch('/api/folders')).status);
      assert.equal(status, 401);

      // nothing was asked of any other site
      const foreign = requests.filter((u) => !u.startsWith(`${origin}/`) && !u.startsWith('data:'));
      assert.deepEqual(foreign, []);
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  });

  test('on a phone-sized screen: one pane at a time', { timeout: 120_000 }, async () => {
    const browser = await launchBrowser({ width: 390, height: 844 });
    try {
      const page = await browser.context.newPage();
      await logIn(page, { at: origin });
      await page.screenshot({ path: join(shots, 'phone-inbox.png'), animations: 'disabled' });
      assert.equal(await page.getByRole('region', { name: 'Message' }).isVisible(), false);
      await row(page, /Team lunch/).click();
      await page.getByRole('heading', { name: 'Team lunch on Friday' }).waitFor();
      assert.equal(
        await page.locator('#message-list').isVisible(),
        false,
        'the list gives way to the message',
      );
      await page.screenshot({ path: join(shots, 'phone-message.png'), animations: 'disabled' });
      await page.getByRole('button', { name: 'Back to the list' }).click();
      await row(page, /Team lunch/).waitFor();
      await page.getByRole('button', { name: 'Folders' }).click();
      await folderLink(page, 'Sent').waitFor({ state: 'visible' });
      await page.screenshot({ path: join(shots, 'phone-folders.png'), animations: 'disabled' });
      await page.keyboard.press('Escape');
      await folderLink(page, 'Sent').waitFor({ state: 'hidden' });
      await page.getByRole('button', { name: 'Compose' }).click();
      await page.getByRole('dialog', { name: 'New message' }).waitFor();
      await page.screenshot({ path: join(shots, 'phone-compose.png'), animations: 'disabled' });
    } finally {
      await browser.close();
    }
  });
});

/**
 * Waits for the load event of the message body's frame (the one shown now: allowing remote
 * content renders a new frame). Not the page's network idle: requests of the page itself,
 * on a busy machine, may keep it from ever being idle for half a second.
 */
describe('links in a message', () => {
  test(
    'a link to a place in the message goes there; it opens no new window',
    { timeout: 120_000 },
    async () => {
      await sendRaw(
        t.p,
        ALICE,
        htmlMail(
          '"Handbook" <handbook@remote.example>',
          'The handbook, chapter by chapter',
          '<p><a href="#chapter-9">Skip to chapter 9</a></p><div style="height:4000px">Chapters 1 to 8</div>' +
            '<h2 id="chapter-9">Chapter 9</h2>',
        ),
      );
      const browser = await launchBrowser();
      try {
        const page = await browser.context.newPage();
        await logIn(page, { at: origin });
        await row(page, /The handbook, chapter by chapter/).click();
        const windows = browser.context.pages().length;
        await page.frameLocator('iframe[title="Message body"]').getByText('Skip to chapter 9').click();
        const frame = await (
          await page.locator('iframe[title="Message body"]').elementHandle()
        )?.contentFrame();
        assert.ok(frame, 'the message body frame');
        await waitFor(() => frame.url().endsWith('#chapter-9'), { what: 'the frame at chapter 9' });
        assert.equal(browser.context.pages().length, windows, 'no window opened for it');
      } finally {
        await browser.close();
      }
    },
  );
});

async function bodyLoaded(page: Page): Promise<void> {
  const frame = await page.locator('iframe[title="Message body"]').elementHandle();
  const content = await frame?.contentFrame();
  assert.ok(content, 'the message body frame');
  await content.waitForLoadState('load');
}

describe('privacy', () => {
  let remote: Server;
  const hits: string[] = [];
  before(async () => {
    remote = createServer((req, res) => {
      hits.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'image/png' }).end();
    });
    await new Promise<void>((resolve) => remote.listen(0, '127.0.0.5', resolve));
  });
  after(() => new Promise<void>((resolve) => remote.close(() => resolve())));

  test('remote images and tracking pixels cause no request until allowed', { timeout: 120_000 }, async () => {
    const base = `http://127.0.0.5:${(remote.address() as AddressInfo).port}`;
    await sendRaw(t.p, ALICE, newsletter(base, { subject: 'Spring offers from the shop' }));
    const browser = await launchBrowser();
    try {
      const page = await browser.context.newPage();
      await logIn(page, { at: origin });
      await row(page, /Spring offers from the shop/).click();
      const body = page.frameLocator('iframe[title="Message body"]');
      await body.getByText('spring').waitFor();
      await body.getByRole('link', { name: 'See the sale' }).waitFor();
      assert.equal(
        await body.getByRole('link', { name: 'See the sale' }).getAttribute('href'),
        'https://shop.example/spring-sale',
      );
      await page.getByText(/3 remote images were blocked/).waitFor();
      await page.getByText('1 tracking pixel removed.').waitFor();
      // the body's load event comes after every image of its document was fetched or failed:
      // by then, still not a single request to the remote host
      await bodyLoaded(page);
      assert.equal(hits.length, 0, `requests to the remote host: ${hits.join(' ')}`);
      await page.screenshot({ path: join(shots, 'privacy.png'), animations: 'disabled' });

      await page.getByRole('button', { name: 'Show images', exact: true }).click();
      await waitFor(() => hits.includes('/banner.png'), { what: 'the banner once allowed' });
      await bodyLoaded(page);
      assert.ok(
        !hits.some((h) => h.startsWith('/open.gif')),
        `the tracking pixel stays out: ${hits.join(' ')}`,
      );
    } finally {
      await browser.close();
    }
  });

  test(
    'backgrounds written with CSS escapes, over lines or in image-set() are offered, and loaded once allowed',
    { timeout: 120_000 },
    async () => {
      const base = `http://127.0.0.5:${(remote.address() as AddressInfo).port}`;
      // u\72l( is url( and "\68 " an h, a backslash before a line break in a string
      // nothing, and image-set() takes a string for a URL, as the browser reads them
      const sheet = [
        `.hero{height:40px;background-image:u\\72l(${base}/\\68 ero.png)}`,
        `.wrap{height:40px;background-image:url("${base}/wr\\\r\nap.png")}`,
        `.set{height:40px;background-image:image-set("${base}/set.png" 1x)}`,
      ].join('\r\n');
      await sendRaw(
        t.p,
        ALICE,
        htmlMail(
          '"Gallery" <gallery@remote.example>',
          'The gallery reopens',
          `<html><head><style>${sheet}</style></head><body><div class="hero">Come and see</div>` +
            '<div class="wrap"></div><div class="set"></div></body></html>',
        ),
      );
      const browser = await launchBrowser();
      try {
        const page = await browser.context.newPage();
        await logIn(page, { at: origin });
        await row(page, /The gallery reopens/).click();
        await page.frameLocator('iframe[title="Message body"]').getByText('Come and see').waitFor();
        await page.getByText(/3 remote images were blocked/).waitFor();
        await bodyLoaded(page);
        const images = ['/hero.png', '/wrap.png', '/set.png'];
        assert.ok(!images.some((i) => hits.includes(i)), `requests to the remote host: ${hits.join(' ')}`);
        await page.getByRole('button', { name: 'Show images', exact: true }).click();
        await waitFor(() => images.every((i) => hits.includes(i)), { what: 'the backgrounds once allowed' });
      } finally {
        await browser.close();
      }
    },
  );
});
