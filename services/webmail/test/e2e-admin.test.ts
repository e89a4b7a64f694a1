// The admin console in a real browser (Debian's Chromium through playwright-core): an admin
// adds a domain and finds its DKIM records to publish and flagged missing in DNS, locks an
// account and IMAP refuses it, and finds both in the audit log; adds an account with a UTF-8
// local part in an IDN domain, and a target to an alias; requeues a dead letter, which then
// reaches its recipient; a user without the role sees no Admin entry.
// Screenshots of the console on a desktop and a phone (WEBMAIL_SCREENSHOTS_DIR).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Page } from 'playwright-core';
import { addAccount } from '../../../test/harness.js';
import { newQueueId } from '@mailyard/smtp-core';
import { tempDir, waitFor } from '@mailyard/testkit';
import { launchBrowser, screenshotDir } from './browser.js';
import { deadMail, deferredMail, testBus } from './dead-letters.js';
import { logIn, webmailFile } from './file-setup.js';
import { imapLogin as imapLoginAs } from './mail-clients.js';
import { ALICE, BOB, HOST, PASSWORD, type WebmailTestbed } from './webmail-harness.js';

const CAROL = 'carol@example.test';
let t: WebmailTestbed;
let origin: string;
const shots = screenshotDir();

/**
 * What the loopback DNS server answers for example.test: the MX right, SPF leaving this server out, no
 * DMARC (nor anything else); the server's name with forward-confirmed reverse DNS.
 */
function publishDns(): void {
  t.p.dns.set(HOST, { A: ['127.0.0.1'] });
  t.p.dns.set('1.0.0.127.in-addr.arpa', { PTR: [HOST] });
  t.p.dns.set('example.test', { MX: [{ priority: 10, exchange: HOST }], TXT: ['v=spf1 ip4:192.0.2.1 -all'] });
}

webmailFile({ browser: true, screenshots: true }, async (f) => {
  t = f.t;
  await t.p.directory.setAdmin(ALICE, true);
  await addAccount(t.p.directory, CAROL);
  publishDns();
  const wm = await t.another({}, {});
  origin = `https://${HOST}:${wm.port}`;
});

/** Logs `account` in at `at`; what comes next (the Admin entry or not) is each test's to wait for. */
const logInAs = (page: Page, account: string, at = origin) => logIn(page, { at, account, ready: null });

/**
 * A browser logged in as the admin, on `section` of the console (at `at`), for `fn`; closed
 * after. Each comes from an address of its own: the file's logins would otherwise pass the
 * login limit of one address (LOGIN_RATE_LIMIT a minute).
 */
let browsers = 0;
async function inConsole(section: string, fn: (page: Page) => Promise<void>, at = origin): Promise<void> {
  const browser = await launchBrowser(undefined, { clientAddress: `10.0.0.${++browsers}` });
  try {
    const page = await browser.context.newPage();
    await logInAs(page, ALICE, at);
    await page.getByRole('button', { name: 'Admin' }).click();
    await page.getByRole('link', { name: section }).click();
    await fn(page);
  } finally {
    await browser.close();
  }
}

test(
  'as admin: add a domain, see its DKIM records; lock an account; the audit log',
  { timeout: 180_000 },
  async () => {
    const browser = await launchBrowser();
    const errors: string[] = [];
    try {
      const page = await browser.context.newPage();
      page.on('pageerror', (e) => errors.push(e.message));
      page.on('dialog', (d) => void d.accept());
      await logInAs(page, ALICE);
      await page.getByRole('button', { name: 'Admin' }).click();
      await page.getByRole('heading', { name: 'Domains' }).waitFor();

      await page.getByLabel('New domain').fill('shop.test');
      await page.getByRole('button', { name: 'Add domain' }).click();
      await page
        .getByRole('status')
        .filter({ hasText: /^Added shop\.test with DKIM keys rsa-\d{6} and ed25519-\d{6}$/ })
        .waitFor();
      const records = page.getByRole('list', { name: 'DNS records of shop.test' });
      await records.waitFor();
      const lines = await records.locator('code').allTextContents();
      assert.ok(
        lines.some((l) => /^rsa-\d{6}\._domainkey\.shop\.test\. IN TXT \( "v=DKIM1; k=rsa; p=/.test(l)),
        lines.join('\n'),
      );
      assert.ok(
        lines.some((l) => /^ed25519-\d{6}\._domainkey\.shop\.test\. IN TXT "v=DKIM1; k=ed25519; p=/.test(l)),
      );
      assert.ok(lines.includes(`shop.test. IN MX 10 ${HOST}.`));
      await page.getByRole('button', { name: 'Copy the dkim:', exact: false }).first().waitFor();
      await page.screenshot({
        path: join(shots, 'admin-domains.png'),
        animations: 'disabled',
        fullPage: true,
      });

      // lock carol: IMAP refuses her password from now on
      assert.equal(await imapLoginAs(t, CAROL, PASSWORD), true);
      await page.getByRole('link', { name: 'Accounts' }).click();
      await page.getByRole('button', { name: `Lock ${CAROL}` }).click();
      await page
        .getByRole('status')
        .filter({ hasText: `Locked ${CAROL}` })
        .waitFor();
      await page.getByRole('button', { name: `Unlock ${CAROL}` }).waitFor();
      assert.equal(await imapLoginAs(t, CAROL, PASSWORD), false);
      await page.screenshot({
        path: join(shots, 'admin-accounts.png'),
        animations: 'disabled',
        fullPage: true,
      });

      // both actions in the audit log, with who did them
      await page.getByRole('link', { name: 'Audit log' }).click();
      const lock = page.getByRole('row').filter({ hasText: 'account.lock' });
      await lock.waitFor();
      assert.match((await lock.textContent())!, new RegExp(`${ALICE}.*account\\.lock.*${CAROL}`));
      await page
        .getByRole('row')
        .filter({ hasText: 'domain.add' })
        .filter({ hasText: 'shop.test' })
        .waitFor();
      await page.screenshot({ path: join(shots, 'admin-audit.png'), animations: 'disabled' });

      // the DNS page: what is wrong and missing, with what DNS answers and what to publish
      await page.getByRole('link', { name: 'DNS check' }).click();
      const report = page.getByRole('region', { name: /^DNS of / });
      await report.waitFor();
      await report
        .getByRole('status')
        .filter({ hasText: /\d+ of \d+ records need attention/ })
        .waitFor();
      const spf = report.locator('.dns-record.wrong').filter({ hasText: 'SPF' });
      assert.match(
        (await spf.textContent())!,
        /Wrong.*SPF.*v=spf1 mx -all.*DNS answers.*v=spf1 ip4:192\.0\.2\.1 -all/,
      );
      const dmarc = report.locator('.dns-record.missing').filter({ hasText: 'DMARC' });
      assert.match((await dmarc.textContent())!, /Missing.*DMARC.*nothing/);
      assert.equal(await report.locator('.dns-record.ok').filter({ hasText: 'MX' }).count(), 1);
      await page.screenshot({ path: join(shots, 'admin-dns.png'), animations: 'disabled', fullPage: true });
      // the domain just added: nothing published yet, its MX and DKIM records flagged missing
      await page.getByLabel('Domain', { exact: true }).selectOption('shop.test');
      const shop = page.getByRole('region', { name: 'DNS of shop.test' });
      await shop.waitFor();
      await shop.locator('.dns-record.missing').filter({ hasText: 'MX' }).first().waitFor();
      assert.ok((await shop.locator('.dns-record.missing').filter({ hasText: 'DKIM' }).count()) >= 2);
      assert.equal(await shop.locator('.dns-record.ok').count(), 0);
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  },
);

test(
  'as admin: a dead letter is listed and shown; Requeue, once confirmed, sends it on and empties the list',
  { timeout: 180_000 },
  async () => {
    const bus = await testBus(t.p.env.AMQP_URL!);
    const browser = await launchBrowser();
    const errors: string[] = [];
    try {
      const id = newQueueId();
      await deadMail(bus, {
        queueId: id,
        queue: 'delivery',
        reason:
          'RecipientsDeferred: 4.6.0 Alias expansion error: alias expansion of crowd@example.test reached 14 addresses, over the limit of 10',
        recipients: [CAROL],
        attempts: 5,
      });
      const page = await browser.context.newPage();
      page.on('pageerror', (e) => errors.push(e.message));
      await logInAs(page, ALICE);
      await page.getByRole('button', { name: 'Admin' }).click();
      await page.getByRole('link', { name: 'Dead letters' }).click();
      const letter = page.getByRole('list', { name: 'Dead letters' }).getByRole('listitem');
      await letter.filter({ hasText: id }).waitFor();
      assert.match(
        (await letter.textContent())!,
        new RegExp(
          `${id} from <sender@remote\\.test>to ${CAROL}queue delivery · 5 attempts · dead-lettered .* · \\d+ B` +
            `RecipientsDeferred: 4\\.6\\.0 Alias expansion error: .*over the limit of 10Show`,
        ),
      );
      await page.getByRole('button', { name: `Show ${id}` }).click();
      const headers = page.getByLabel(`Headers of ${id}`);
      await headers.waitFor();
      assert.match((await headers.textContent())!, new RegExp(`Subject: dead letter ${id}`));
      await page.screenshot({ path: join(shots, 'admin-dead-letters.png'), animations: 'disabled' });

      // Delete asks first: dismissed, nothing happens
      const asked: string[] = [];
      page.once('dialog', (d) => {
        asked.push(d.message());
        void d.dismiss();
      });
      await page.getByRole('button', { name: `Delete ${id}` }).click();
      await waitFor(() => asked.length === 1, { what: 'the confirmation of the deletion' });
      assert.match(asked[0]!, new RegExp(`^Delete ${id} for good\?`));
      page.once('dialog', (d) => {
        asked.push(d.message());
        void d.accept();
      });
      await page.getByRole('button', { name: `Requeue ${id}` }).click();
      await page
        .getByRole('status')
        .filter({ hasText: `${id} requeued: it runs afresh` })
        .waitFor();
      assert.equal(asked[1], `Requeue ${id}? It goes back to delivery and runs afresh.`);
      await page.getByRole('status').filter({ hasText: 'There are no dead letters.' }).waitFor();
      assert.equal(await letter.count(), 0);
      await waitFor(() => t.p.inbox(CAROL).length === 1, {
        what: 'the requeued letter delivered to carol',
        timeoutMs: 30_000,
      });
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      await bus.stop();
    }
  },
);

test(
  'as admin: an account with a UTF-8 local part in an IDN domain, as the CLI adds it; a duplicate is refused',
  { timeout: 120_000 },
  async () => {
    await t.p.directory.addDomain('bücher.test');
    await inConsole('Accounts', async (page) => {
      const add = async () => {
        await page.getByLabel('Address', { exact: true }).fill('Jürgen@Bücher.test');
        await page.getByLabel('Password (at least 10 characters)').fill(PASSWORD);
        await page.getByRole('button', { name: 'Add account' }).click();
      };
      await add();
      await page.getByRole('status').filter({ hasText: 'Added jürgen@xn--bcher-kva.test' }).waitFor();
      assert.equal(await t.p.directory.accountExists('jürgen@xn--bcher-kva.test'), true);
      // the server's refusal, as the CLI words it
      await add();
      await page
        .getByRole('alert')
        .filter({ hasText: 'Account jürgen@xn--bcher-kva.test already exists' })
        .waitFor();
    });
  },
);

test(
  'as admin: a target added to an alias joins those it had, and the page says all of them',
  { timeout: 120_000 },
  async () => {
    await inConsole('Aliases', async (page) => {
      const add = async (source: string, targets: string) => {
        await page.getByLabel('Alias (address, or @domain for a catch-all)').fill(source);
        await page.getByLabel('Deliver to (addresses, separated by commas)').fill(targets);
        await page.getByRole('button', { name: 'Add alias' }).click();
      };
      await add('Team@example.test', BOB);
      await page
        .getByRole('status')
        .filter({ hasText: `team@example.test now delivers to ${BOB}` })
        .waitFor();
      await add('team@example.test', CAROL);
      await page
        .getByRole('status')
        .filter({ hasText: `team@example.test now delivers to ${BOB}, ${CAROL}` })
        .waitFor();
      assert.equal((await t.p.directory.expand('team@example.test')).local.length, 2);
      await page.getByRole('button', { name: `Remove ${BOB} from team@example.test` }).waitFor();
      // a refusal: the server's sentence
      await add('team@elsewhere.test', BOB);
      await page
        .getByRole('alert')
        .filter({ hasText: 'Domain elsewhere.test is not a local domain' })
        .waitFor();
      // the add's own answer says what the alias delivers to: a list that cannot be
      // read afterwards does not turn the add into a failure
      await page.route('**/api/admin/aliases', (route) =>
        route.request().method() === 'GET' ? route.abort() : route.continue(),
      );
      await add('team@example.test', 'ext@elsewhere.test');
      await page
        .getByRole('status')
        .filter({ hasText: `team@example.test now delivers to ${BOB}, ${CAROL}, ext@elsewhere.test` })
        .waitFor();
    });
  },
);

test(
  'as admin: a deleted domain takes its DKIM keys, which the DKIM page no longer offers to rotate',
  { timeout: 120_000 },
  async () => {
    await inConsole('Domains', async (page) => {
      page.on('dialog', (d) => void d.accept());
      for (const domain of ['kept.test', 'gone.test']) {
        await page.getByLabel('New domain').fill(domain);
        await page.getByRole('button', { name: 'Add domain' }).click();
        await page
          .getByRole('status')
          .filter({ hasText: `Added ${domain} with DKIM keys` })
          .waitFor();
      }
      await page.getByRole('button', { name: 'Delete gone.test' }).click();
      await page
        .getByRole('status')
        .filter({
          hasText:
            /^Deleted gone\.test and its DKIM keys rsa-\d{6}, ed25519-\d{6}; their DNS records can go$/,
        })
        .waitFor();
      await page.getByRole('link', { name: 'DKIM keys' }).click();
      await page.getByRole('button', { name: 'Rotate the rsa key of kept.test' }).waitFor();
      assert.equal(await page.getByRole('cell', { name: 'gone.test', exact: true }).count(), 0);
      assert.equal(await page.getByRole('button', { name: 'Rotate the rsa key of gone.test' }).count(), 0);
    });
  },
);

test('as admin: a certificate with one day left says 1 day, not 1 days', { timeout: 120_000 }, async () => {
  const dir = tempDir();
  try {
    const [cert, key] = [join(dir.path, 'cert.pem'), join(dir.path, 'key.pem')];
    // two days from now: a day and some hours left
    const made = spawnSync(
      'openssl',
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2'].concat(
        ['-subj', `/CN=${HOST}`, '-addext', `subjectAltName=DNS:${HOST}`, '-keyout', key, '-out', cert],
      ),
      { encoding: 'utf8' },
    );
    assert.equal(made.status, 0, made.stderr);
    const wm = await t.another({ tls_cert_file: cert, tls_key_file: key });
    await inConsole(
      'DNS check',
      async (page) => {
        await page.getByRole('heading', { name: 'TLS certificate' }).waitFor();
        await page.getByText('1 day left', { exact: true }).waitFor();
      },
      `https://${HOST}:${wm.port}`,
    );
  } finally {
    dir.cleanup();
  }
});

/** Accounts `<prefix>01@example.test` to `<prefix><n>@…`, added; their addresses. */
async function numberedAccounts(prefix: string, n: number): Promise<string[]> {
  const names = Array.from(
    { length: n },
    (_, i) => `${prefix}${String(i + 1).padStart(2, '0')}@example.test`,
  );
  for (const a of names) await addAccount(t.p.directory, a);
  return names;
}

/** Searches the accounts page for `q` and waits for the pager to say `shown`. */
async function findAccounts(page: Page, q: string, shown: string): Promise<void> {
  await page.getByLabel('Find an account').fill(q);
  await page.getByRole('button', { name: 'Find' }).click();
  await page.getByText(shown).waitFor();
}

/**
 * Holds the page's account-list requests whose query has `param` set to `value` until the
 * returned function is called.
 */
async function holdAccountReads(page: Page, param: string, value: string): Promise<() => void> {
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  await page.route('**/api/admin/accounts?*', async (route) => {
    if (new URL(route.request().url()).searchParams.get(param) === value) await held;
    await route.continue();
  });
  return release;
}

test(
  'as admin: deleting the only account of the last page goes back a page',
  { timeout: 120_000 },
  async () => {
    await numberedAccounts('page', 26);
    await inConsole('Accounts', async (page) => {
      page.on('dialog', (d) => void d.accept());
      await findAccounts(page, 'page', '1–25 of 26');
      await page.getByRole('button', { name: 'Next' }).click();
      await page.getByText('26–26 of 26').waitFor();
      await page.getByRole('button', { name: 'Delete page26@example.test' }).click();
      await page.getByText('1–25 of 25').waitFor();
      await page.getByRole('button', { name: 'Delete page25@example.test' }).waitFor();
    });
  },
);

test(
  'as admin: the accounts page shows at once, its usage filled in when read',
  { timeout: 120_000 },
  async () => {
    await numberedAccounts('usage', 3);
    await inConsole('Accounts', async (page) => {
      // the usage reads (an IMAP login each) are slow today
      const release = await holdAccountReads(page, 'usage', '1');
      await findAccounts(page, 'usage', '1–3 of 3');
      const row = page.getByRole('listitem').filter({ hasText: 'usage01@example.test' });
      await row.getByText('reading usage…').waitFor();
      release();
      // no quota set and none by default: the store says no limit
      await row.getByText(/^no limit · created/).waitFor();
    });
  },
);

test('as admin: Retry all now counts one deferred message as one', { timeout: 120_000 }, async () => {
  const bus = await testBus(t.p.env.AMQP_URL!);
  try {
    const id = newQueueId();
    await deferredMail(bus, t.p.redis.redis, id);
    await inConsole('Queue', async (page) => {
      await page.getByRole('button', { name: `Retry ${id} now` }).waitFor();
      await page.getByRole('button', { name: 'Retry all now' }).click();
      await page.getByRole('status').filter({ hasText: '1 message queued for delivery' }).waitFor();
    });
  } finally {
    await bus.stop();
  }
});

test(
  'as admin: accounts deleted meanwhile by another admin: the page goes to the last page there is',
  { timeout: 120_000 },
  async () => {
    const names = await numberedAccounts('gone', 51);
    await inConsole('Accounts', async (page) => {
      await findAccounts(page, 'gone', '1–25 of 51');
      await page.getByRole('button', { name: 'Next' }).click();
      await page.getByText('26–50 of 51').waitFor();
      await page.getByRole('button', { name: 'Next' }).click();
      await page.getByText('51–51 of 51').waitFor();
      // the pager moves at the click, the rows when the page has come
      await page.getByRole('button', { name: 'Delete gone51@example.test' }).waitFor();
      // another admin deletes all but ten; this one adds an account, and the list is read again
      for (const a of names.slice(10)) await t.p.directory.delUser(a);
      const offsets: string[] = [];
      page.on('request', (r) => {
        const url = new URL(r.url());
        // the pages read, not the usage read after each
        if (url.pathname === '/api/admin/accounts' && url.searchParams.get('usage') === '0')
          offsets.push(url.searchParams.get('offset') ?? '0');
      });
      await page.getByLabel('Address', { exact: true }).fill('newcomer@example.test');
      await page.getByLabel('Password (at least 10 characters)').fill(PASSWORD);
      await page.getByRole('button', { name: 'Add account' }).click();
      await page.getByText('1–10 of 10').waitFor();
      await page.getByRole('button', { name: 'Delete gone10@example.test' }).waitFor();
      // the page that came back empty, then straight to the last one
      assert.deepEqual(offsets, ['50', '0']);
    });
  },
);

test(
  'as admin: a page that comes back late does not replace the page asked for after it',
  { timeout: 120_000 },
  async () => {
    await numberedAccounts('late', 30);
    await inConsole('Accounts', async (page) => {
      await findAccounts(page, 'late', '1–25 of 30');
      // the second page is slow; Previous is pressed before it comes
      const release = await holdAccountReads(page, 'offset', '25');
      const slow = page.waitForResponse((r) => new URL(r.url()).searchParams.get('offset') === '25');
      await page.getByRole('button', { name: 'Next' }).click();
      await page.getByText('26–30 of 30').waitFor();
      const first = page.waitForResponse((r) => new URL(r.url()).searchParams.get('offset') === '0');
      await page.getByRole('button', { name: 'Previous' }).click();
      await first;
      await page.getByRole('button', { name: 'Delete late01@example.test' }).waitFor();
      release();
      await (await slow).finished();
      // two frames: time for the late answer to be read and drawn, were it taken
      await page.evaluate('new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))');
      // the answer that came last was for the page left: the first page stays
      await page.getByText('1–25 of 30').waitFor();
      await page.getByRole('button', { name: 'Delete late01@example.test' }).waitFor();
      assert.equal(await page.getByRole('button', { name: 'Delete late26@example.test' }).count(), 0);
    });
  },
);

test('a user without the admin role sees no Admin entry', { timeout: 120_000 }, async () => {
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    const account = page.waitForResponse((r) => new URL(r.url()).pathname === '/api/account');
    await logInAs(page, BOB);
    assert.equal(((await (await account).json()) as { admin: boolean }).admin, false);
    await page.getByRole('button', { name: 'Account' }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Admin' }).count(), 0);
  } finally {
    await browser.close();
  }
});

test(
  'as admin: make an account an admin, set its password, take the role back; never for oneself',
  { timeout: 120_000 },
  async () => {
    const ines = 'ines@example.test';
    const fresh = 'a brand new passphrase';
    await addAccount(t.p.directory, ines);
    await inConsole('Accounts', async (page) => {
      page.on('dialog', (d) => void d.accept());
      await findAccounts(page, 'ines', '1–1 of 1');
      await page.getByRole('button', { name: `Make ${ines} an admin` }).click();
      await page
        .getByRole('status')
        .filter({ hasText: `${ines} is an admin: it may use this console` })
        .waitFor();
      assert.equal(await t.p.directory.isAdmin(ines), true);

      await page.getByLabel(`New password of ${ines}`).fill(fresh);
      await page.getByRole('button', { name: `Set the password of ${ines}` }).click();
      await page
        .getByRole('status')
        .filter({ hasText: `Set the password of ${ines}; its sessions have ended` })
        .waitFor();
      assert.equal(await imapLoginAs(t, ines, PASSWORD), false);
      assert.equal(await imapLoginAs(t, ines, fresh), true);

      await page.getByRole('button', { name: `Take the admin role from ${ines}` }).click();
      await page
        .getByRole('status')
        .filter({ hasText: `${ines} is no longer an admin` })
        .waitFor();
      await page.getByRole('button', { name: `Make ${ines} an admin` }).waitFor();
      assert.equal(await t.p.directory.isAdmin(ines), false);

      // one's own account: neither its role nor its password is offered here
      await findAccounts(page, ALICE, '1–1 of 1');
      await page.getByRole('button', { name: `Set the quota of ${ALICE}` }).waitFor();
      assert.equal(await page.getByRole('button', { name: `Take the admin role from ${ALICE}` }).count(), 0);
      assert.equal(await page.getByRole('button', { name: `Set the password of ${ALICE}` }).count(), 0);
    });
  },
);

test('the console on a phone', { timeout: 120_000 }, async () => {
  const browser = await launchBrowser({ width: 390, height: 844 });
  try {
    const page = await browser.context.newPage();
    await logInAs(page, ALICE);
    await page.getByRole('button', { name: 'Admin' }).click();
    await page.getByRole('link', { name: 'Accounts' }).click();
    await page.getByRole('list', { name: 'Accounts' }).getByText(CAROL, { exact: true }).waitFor();
    // nothing wider than the screen
    const width = await page.locator('html').evaluate((html) => html.scrollWidth);
    assert.ok(width <= 390, `the page is ${width}px wide`);
    await page.screenshot({ path: join(shots, 'phone-admin-accounts.png'), animations: 'disabled' });
    await page.getByRole('link', { name: 'DNS check' }).click();
    await page.getByRole('region', { name: /^DNS of / }).waitFor();
    await page.screenshot({ path: join(shots, 'phone-admin-dns.png'), animations: 'disabled' });
  } finally {
    await browser.close();
  }
});
