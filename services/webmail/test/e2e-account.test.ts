// The account page in a real browser (Debian's Chromium through playwright-core): turn on
// two-factor login by the QR code's key, log out, log in again with a code, create an app
// password, and find IMAP taking the app password and refusing the account password.
// TOTP codes come from otplib on the webmail's clock, which the test moves a step at a time.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { generate } from 'otplib';
import nodemailer from 'nodemailer';
import type { BrowserContext, Page, Request } from 'playwright-core';
import { LoginGuard, TwoFactor } from '@mailyard/auth';
import type { Directory } from '@mailyard/directory';
import { waitFor } from '@mailyard/testkit';
import { addAccount } from '../../../test/harness.js';
import { launchBrowser, screenshotDir } from './browser.js';
import { MailRules } from '@mailyard/mail-rules';
import { logIn, webmailFile } from './file-setup.js';
import { holdSessions, imapLogin as imapLoginAs } from './mail-clients.js';
import { WebClient } from './web-client.js';
import { HOST, PASSWORD, type WebmailTestbed } from './webmail-harness.js';

const ACCOUNT = 'dora@example.test';
let t: WebmailTestbed;
let origin: string;
let wmPort: number;
let clock = Date.now();
const shots = screenshotDir();

webmailFile({ browser: true, screenshots: true }, async (f) => {
  t = f.t;
  await addAccount(t.p.directory, ACCOUNT);
  const redis = t.p.redis.redis;
  const wm = await t.another(
    {},
    { twoFactor: new TwoFactor(redis, new LoginGuard(redis), { issuer: HOST, now: () => clock }) },
  );
  origin = `https://${HOST}:${wm.port}`;
  wmPort = wm.port;
});

const imapLogin = (pass: string) => imapLoginAs(t, ACCOUNT, pass);

const accountButton = (page: Page) => page.getByRole('button', { name: 'Account' });
const secondStep = (page: Page) => page.getByRole('heading', { name: 'One more step' });

/** A new page logged in as `account`, on the account page; the page's script errors go to `errors`. */
async function accountPage(
  context: BrowserContext,
  account: string,
  errors: string[],
  at = origin,
): Promise<Page> {
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(e.message));
  await logIn(page, { at, account, ready: accountButton });
  await accountButton(page).click();
  return page;
}

test('two-factor login and an app password, set up in the browser', { timeout: 180_000 }, async () => {
  const browser = await launchBrowser();
  const errors: string[] = [];
  try {
    const page = await accountPage(browser.context, ACCOUNT, errors);
    await page.getByRole('heading', { name: 'Two-factor login' }).waitFor();
    await page.getByText('your password no longer works in mail apps').waitFor();

    // both ask for the password again: a wrong one sets up nothing
    await page.getByLabel('Your password, to set it up').fill('not my password');
    await page.getByRole('button', { name: 'Set up two-factor login' }).click();
    await page.getByRole('alert').filter({ hasText: 'That is not your current password' }).waitFor();
    await page.getByLabel('Your password, to set it up').fill(PASSWORD);
    await page.getByRole('button', { name: 'Set up two-factor login' }).click();
    await page.getByRole('img', { name: 'QR code for your authenticator app' }).waitFor();
    await page.screenshot({ path: join(shots, 'account-two-factor.png'), animations: 'disabled' });
    const secret = (await page.locator('code.secret').textContent())!.trim();
    await page
      .getByLabel('Code from the app')
      .fill(await generate({ secret, epoch: Math.floor(clock / 1000) }));
    await page.getByRole('button', { name: 'Turn on' }).click();
    const codes = page.getByRole('region', { name: 'Recovery codes' }).or(page.locator('.recovery'));
    await codes.waitFor();
    assert.equal(await page.locator('.recovery li').count(), 10);
    await page.getByText('Two-factor login is on').waitFor();

    // an app password for the phone, shown once
    await page.getByLabel('Name of the device').fill('phone');
    await page.getByLabel('Your password', { exact: true }).fill(PASSWORD);
    await page.getByRole('button', { name: 'Create app password' }).click();
    const shown = (await page.getByLabel('New app password').textContent())!.replace(/\s/g, '');
    assert.match(shown, /^[a-z2-9]{20}$/);
    await page.getByRole('cell', { name: 'phone', exact: true }).waitFor();
    await page.screenshot({ path: join(shots, 'account-app-passwords.png'), animations: 'disabled' });

    // IMAP: the app password opens the mailbox, the account password no longer does
    assert.equal(await imapLogin(shown), true);
    assert.equal(await imapLogin(PASSWORD), false);

    // log out and in again: the code is asked for after the password
    await page.getByRole('button', { name: 'Back to mail' }).click();
    await page.getByRole('button', { name: 'Log out' }).click();
    await logIn(page, { account: ACCOUNT, ready: secondStep });
    clock += 30_000;
    await page.getByLabel('Code').fill('000000');
    await page.getByRole('button', { name: 'Verify' }).click();
    await page.getByRole('alert').filter({ hasText: 'Wrong or already used code' }).waitFor();
    await page.getByLabel('Code').fill(await generate({ secret, epoch: Math.floor(clock / 1000) }));
    await page.getByRole('button', { name: 'Verify' }).click();
    await accountButton(page).waitFor();

    // revoking the app password: IMAP refuses it
    await accountButton(page).click();
    await page.getByRole('button', { name: 'Revoke phone' }).click();
    await page.getByRole('cell', { name: 'phone', exact: true }).waitFor({ state: 'detached' });
    assert.equal(await imapLogin(shown), false);

    // while the browser is at its second step, guessers elsewhere use up the wrong codes
    // allowed in a row: the browser's code ends its login, and the password is asked again
    await page.getByRole('button', { name: 'Back to mail' }).click();
    await page.getByRole('button', { name: 'Log out' }).click();
    await logIn(page, { account: ACCOUNT, ready: secondStep });
    for (let i = 0; i < 5; i++) {
      const guesser = new WebClient(wmPort, t.ca);
      guesser.csrf = (await guesser.login(ACCOUNT)).json.csrf;
      for (const n of [1, 2]) await guesser.post('/api/login/second-factor', { code: `90000${n}` });
    }
    clock += 30_000;
    await page.getByLabel('Code').fill(await generate({ secret, epoch: Math.floor(clock / 1000) }));
    await page.getByRole('button', { name: 'Verify' }).click();
    await page.getByRole('alert').filter({ hasText: 'Too many wrong codes' }).waitFor();
    await page.getByRole('heading', { name: 'Log in to your mail' }).waitFor();
    await logIn(page, { account: ACCOUNT, ready: secondStep });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test(
  'an out-of-office reply set on the account page, then signing out everywhere',
  { timeout: 180_000 },
  async (t2) => {
    const account = 'otto@example.test';
    await addAccount(t.p.directory, account);
    const held = await holdSessions([
      { label: 'imap', proto: 'imap', port: t.retrieval.ports.imaps, user: account, pass: PASSWORD },
    ]);
    t2.after(() => held.close());
    const browser = await launchBrowser();
    const errors: string[] = [];
    try {
      const page = await accountPage(browser.context, account, errors);
      page.on('dialog', (d) => void d.accept());
      await page.getByRole('heading', { name: 'Out of office' }).waitFor();

      // a last day before the first is refused with the server's reason
      await page.getByLabel('Reply automatically').check();
      await page
        .getByLabel('Message', { exact: true })
        .fill('I am away until 4 January; Ada answers urgent mail.');
      await page.getByLabel('First day (optional)').fill('2026-12-21');
      await page.getByLabel('Last day (optional)').fill('2026-12-01');
      await page.getByRole('button', { name: 'Save out-of-office reply' }).click();
      await page.getByRole('alert').filter({ hasText: 'end: the last day is before the first' }).waitFor();
      await page.getByLabel('Last day (optional)').fill('2027-01-03');
      await page.getByLabel('Subject (empty: “Auto:” and the original subject)').fill('Away until 4 January');
      await page.getByRole('button', { name: 'Save out-of-office reply' }).click();
      await page.getByText('Saved: the reply is on.').waitFor();
      const section = page.getByRole('region', { name: 'Out of office' });
      await section.scrollIntoViewIfNeeded();
      await section.screenshot({ path: join(shots, 'account-out-of-office.png'), animations: 'disabled' });
      const { vacation } = await new MailRules(t.p.redis.redis).get(account);
      assert.deepEqual(vacation, {
        enabled: true,
        subject: 'Away until 4 January',
        body: 'I am away until 4 January; Ada answers urgent mail.',
        start: '2026-12-21',
        end: '2027-01-03',
        days: 7,
      });

      // the recent logins list this browser's login; sign out everywhere ends it and IMAP
      const logins = page.getByRole('region', { name: 'Recent logins' });
      await logins.getByRole('cell', { name: 'Webmail' }).first().waitFor();
      await logins.screenshot({ path: join(shots, 'account-recent-logins.png'), animations: 'disabled' });
      await page.getByRole('button', { name: 'Sign out everywhere' }).click();
      await page.getByText('You are signed out everywhere.').waitFor();
      await page.getByLabel('Email address').waitFor();
      assert.equal(await held.next('imap'), '* BYE [EXPIRED] Signed out everywhere by the account owner');
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  },
);

test(
  'a new password in the browser: the page goes on under a new cookie, the old one is no good',
  { timeout: 180_000 },
  async () => {
    const account = 'pia@example.test';
    await addAccount(t.p.directory, account);
    const browser = await launchBrowser();
    const errors: string[] = [];
    try {
      const page = await accountPage(browser.context, account, errors);
      const session = async () =>
        (await browser.context.cookies(origin)).find((c) => c.name === '__Host-mailyard_session')!.value;
      const before = await session();
      await page.getByLabel('Current password').fill(PASSWORD);
      await page.getByLabel('New password', { exact: true }).fill('a new long passphrase');
      await page.getByLabel('New password again').fill('a new long passphrase');
      await page.getByRole('button', { name: 'Change password' }).click();
      await page.getByText('Password changed; your other sessions were ended.').waitFor();
      assert.notEqual(await session(), before);
      const stolen = new WebClient(wmPort, t.ca);
      stolen.cookies.set('__Host-mailyard_session', before);
      assert.equal((await stolen.get('/api/account')).status, 401);
      // the page's next change carries the new token
      await page.getByLabel('Reply automatically').check();
      await page.getByLabel('Message', { exact: true }).fill('Back on Monday.');
      await page.getByRole('button', { name: 'Save out-of-office reply' }).click();
      await page.getByText('Saved: the reply is on.').waitFor();
      assert.equal((await new MailRules(t.p.redis.redis).get(account)).vacation?.body, 'Back on Monday.');
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  },
);

test(
  'a new password in one tab: new mail still shows in another, without a reload',
  { timeout: 180_000 },
  async () => {
    const account = 'rosa@example.test';
    await addAccount(t.p.directory, account);
    const wm = await t.another({ session_renewal_grace: '1s' });
    const at = `https://${HOST}:${wm.port}`;
    const browser = await launchBrowser();
    // from an address of its own (through the trusted proxy): its login counts in no other
    // test's login rate limit
    await browser.context.setExtraHTTPHeaders({ 'x-forwarded-for': '10.200.0.8' });
    const errors: string[] = [];
    try {
      const mail = await browser.context.newPage();
      mail.on('pageerror', (e) => errors.push(e.message));
      const isStream = (r: Request) => r.url().endsWith('/api/events');
      // the stream the mail tab opens once logged in: the one opened again later is another
      const firstStream = mail.waitForRequest(isStream);
      await logIn(mail, { at, account, ready: (p) => p.getByRole('button', { name: 'Compose' }) });
      await firstStream;
      await mail.evaluate('window.notReloaded = true');
      // another tab of the same browser, on the account page
      const settings = await browser.context.newPage();
      settings.on('pageerror', (e) => errors.push(e.message));
      await settings.goto(`${at}/`);
      await accountButton(settings).click();
      await settings.getByLabel('Current password').fill(PASSWORD);
      await settings.getByLabel('New password', { exact: true }).fill('a new long passphrase');
      await settings.getByLabel('New password again').fill('a new long passphrase');
      // the mail tab's event stream, opened under the old cookie, ends once its grace is
      // over (the stream checks its session every 15 s): it opens again under the new one
      const reopening = mail.waitForRequest(isStream, { timeout: 60_000 });
      await settings.getByRole('button', { name: 'Change password' }).click();
      await settings.getByText('Password changed; your other sessions were ended.').waitFor();
      const reopened = await reopening;
      assert.equal((await reopened.response())?.status(), 200);
      await waitFor(() => wm.watching(account), { what: 'the IDLE session', timeoutMs: 30_000 });
      const smtp = nodemailer.createTransport({
        host: '127.0.0.1',
        port: t.p.inbound.port,
        secure: false,
        ignoreTLS: true,
      });
      await smtp.sendMail({ from: 'bob@example.test', to: account, subject: 'After the change', text: 'Hi' });
      smtp.close();
      await mail.getByRole('status').filter({ hasText: 'New mail' }).waitFor({ timeout: 30_000 });
      await mail
        .getByRole('listbox', { name: 'Messages' })
        .getByRole('option', { name: /After the change/ })
        .waitFor();
      assert.equal(await mail.evaluate('window.notReloaded'), true, 'the tab was not reloaded');
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  },
);

test(
  'a new password while signed out everywhere elsewhere: the login page says it was changed',
  { timeout: 180_000 },
  async () => {
    const account = 'quin@example.test';
    await addAccount(t.p.directory, account);
    const elsewhere = new WebClient(wmPort, t.ca);
    assert.equal((await elsewhere.login(account)).status, 200);
    // a webmail where another session of the account signs out everywhere while the new
    // password is being stored
    const directory = Object.create(t.p.directory) as Directory;
    directory.setPassword = async (a, password) => {
      assert.equal((await elsewhere.post('/api/account/sign-out-everywhere')).status, 200);
      return t.p.directory.setPassword(a, password);
    };
    const wm = await t.another({}, { directory });
    const browser = await launchBrowser();
    // from an address of its own (through the trusted proxy): its two logins count in no
    // other test's login rate limit
    await browser.context.setExtraHTTPHeaders({ 'x-forwarded-for': '10.200.0.7' });
    const errors: string[] = [];
    try {
      const page = await accountPage(browser.context, account, errors, `https://${HOST}:${wm.port}`);
      await page.getByLabel('Current password').fill(PASSWORD);
      await page.getByLabel('New password', { exact: true }).fill('a new long passphrase');
      await page.getByLabel('New password again').fill('a new long passphrase');
      await page.getByRole('button', { name: 'Change password' }).click();
      await page
        .getByText(
          'Your password was changed. This session was signed out meanwhile: log in with the new password.',
        )
        .waitFor();
      // and so it was
      await logIn(page, { account, password: 'a new long passphrase', ready: accountButton });
      assert.equal(await imapLoginAs(t, account, PASSWORD), false);
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  },
);

test(
  'an account with a UTF-8 local part in an IDN domain logs in as its name is written',
  { timeout: 120_000 },
  async () => {
    await addAccount(t.p.directory, 'jürgen@bücher.test');
    const browser = await launchBrowser();
    const errors: string[] = [];
    try {
      const page = await accountPage(browser.context, 'jürgen@bücher.test', errors);
      await page.getByRole('heading', { name: 'Two-factor login' }).waitFor();
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  },
);
