// What a webmail test file sets up once for all its tests, and takes down after them: the
// testbed (the webmail on a platform of its own), and as the file asks, the built front end
// and the screenshot directory for the browser tests and an IMAP session of the store
// through which a test puts mail in place or reads what the webmail did.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before } from 'node:test';
import type { ImapFlow } from 'imapflow';
import type { Locator, Page } from 'playwright-core';
import { storeSession } from './mail-clients.js';
import { WebClient } from './web-client.js';
import { ALICE, HOST, PASSWORD, startWebmailTestbed, type WebmailTestbed } from './webmail-harness.js';

export interface WebmailFile {
  t: WebmailTestbed;
  /** The testbed's webmail as a browser reaches it by name. */
  origin: string;
  /** The store session of `store`; not set unless asked for. */
  imap: ImapFlow;
}

/**
 * Registers the file's `before` and `after`: `before` builds the front end if `browser`, makes
 * the screenshot directory if `screenshots`, starts the testbed, opens a store session acting
 * for `store` if given, then runs `setup` (the file's own accounts and mail); `after` logs the
 * session out and stops the testbed, however far `before` got.
 */
export function webmailFile(
  opts: { browser?: boolean; screenshots?: boolean; store?: string },
  setup?: (f: WebmailFile) => Promise<void>,
): void {
  let f: Partial<WebmailFile> = {};
  before(async () => {
    if (opts.browser || opts.screenshots) {
      // only here: playwright takes a while to load, and most files have no browser
      const { ensureFrontEnd, screenshotDir } = await import('./browser.js');
      if (opts.browser) ensureFrontEnd();
      if (opts.screenshots) mkdirSync(screenshotDir(), { recursive: true });
    }
    const t = await startWebmailTestbed();
    f = { t, origin: `https://${HOST}:${t.webmail.port}` };
    if (opts.store) f.imap = await storeSession(t, opts.store);
    await setup?.(f as WebmailFile);
  });
  after(async () => {
    await f.imap?.logout().catch(() => undefined);
    await f.t?.close();
  });
}

/** A client of the webmail at `port` (the testbed's by default), logged in as `account`. */
export async function loggedIn(
  t: WebmailTestbed,
  account: string,
  port = t.webmail.port,
): Promise<WebClient> {
  const c = new WebClient(port, t.ca);
  const res = await c.login(account);
  assert.equal(res.status, 200, res.text);
  return c;
}

/**
 * Logs `page` in through the login form, as a user would: opens `at` first if given (else the
 * form is already shown), fills the address (Alice's unless `account`) and the password, presses
 * Log in, gives the second step's code if `code`, then waits for what `ready` shows a logged-in
 * page to be (the first row of the message list unless said; `null`, nothing).
 */
export async function logIn(
  page: Page,
  opts: {
    at?: string;
    account?: string;
    password?: string;
    code?: () => Promise<string>;
    ready?: ((page: Page) => Locator) | null;
  } = {},
): Promise<void> {
  if (opts.at !== undefined) await page.goto(`${opts.at}/`);
  await page.getByLabel('Email address').fill(opts.account ?? ALICE);
  await page.getByLabel('Password').fill(opts.password ?? PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  if (opts.code) {
    await page.getByLabel('Code').fill(await opts.code());
    await page.getByRole('button', { name: 'Verify' }).click();
  }
  const ready =
    opts.ready === undefined
      ? (p: Page) => p.getByRole('listbox', { name: 'Messages' }).getByRole('option').first()
      : opts.ready;
  await ready?.(page).waitFor();
}
