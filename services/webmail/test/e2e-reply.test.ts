// Answering in a real browser (Debian's Chromium through playwright-core): who a reply
// and a reply to all go to, as the compose form shows them before anything is sent, and
// a reply kept as a draft that marks its original answered once it is sent.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Locator, Page } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { waitFor } from '@mailyard/testkit';
import { launchBrowser } from './browser.js';
import { logIn, webmailFile } from './file-setup.js';
import { storeSession } from './mail-clients.js';
import { plainMessage } from './messages.js';
import { ALICE, BOB, type WebmailTestbed } from './webmail-harness.js';

let t: WebmailTestbed;
let origin: string;

webmailFile({ browser: true, store: ALICE }, async (f) => {
  ({ t, origin } = f);
  const { imap } = f;
  // to alice and others; alice and carol once more in Cc, in other cases
  await imap.append(
    'INBOX',
    plainMessage({
      subject: 'Plans for the offsite',
      from: `"Bob Smith" <${BOB}>`,
      to: `${ALICE}, "Carol" <carol@remote.example>`,
      extra: ['Cc: ALICE@EXAMPLE.TEST, dave@remote.example, "Carol J." <Carol@Remote.Example>'],
    }),
  );
  // what alice sent, as it is kept in Sent
  await imap.append(
    'Sent',
    plainMessage({
      subject: 'Minutes of Monday',
      from: `"Alice" <${ALICE}>`,
      to: `"Bob Smith" <${BOB}>, carol@remote.example`,
      extra: ['Cc: dave@remote.example'],
    }),
    ['\\Seen'],
  );
});

const open = async (page: Page, subject: string) => {
  await page
    .getByRole('listbox', { name: 'Messages' })
    .getByRole('option', { name: new RegExp(subject) })
    .click();
  await page.getByRole('heading', { name: subject }).waitFor();
};

/** Clicks `button` of the reader; the compose form it opens, with what its fields hold. */
const answer = async (page: Page, button: string, subject: string) => {
  await page.getByRole('button', { name: button, exact: true }).click();
  const compose = page.getByRole('dialog', { name: `Re: ${subject}` });
  await compose.waitFor();
  const field = async (c: Locator, label: string) =>
    (await c.getByLabel(label, { exact: true }).count())
      ? c.getByLabel(label, { exact: true }).inputValue()
      : null;
  const fields = {
    from: await compose.getByLabel('From').inputValue(),
    to: await field(compose, 'To'),
    cc: await field(compose, 'Cc'),
  };
  await compose.getByRole('button', { name: 'Discard' }).click();
  await compose.waitFor({ state: 'detached' });
  return fields;
};

/** A page of a new browser, logged in as alice. */
async function withPage(fn: (page: Page) => Promise<void>): Promise<void> {
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    await logIn(page, { at: origin });
    await fn(page);
  } finally {
    await browser.close();
  }
}

test('a reply to all shows the Cc it fills', { timeout: 120_000 }, () =>
  withPage(async (page) => {
    await open(page, 'Plans for the offsite');
    const { cc } = await answer(page, 'Reply all', 'Plans for the offsite');
    assert.match(cc ?? 'no Cc field', /dave@remote\.example/);
  }),
);

test(
  'reply to all: each other recipient once, whatever its case, and never oneself',
  { timeout: 120_000 },
  () =>
    withPage(async (page) => {
      await open(page, 'Plans for the offsite');
      assert.deepEqual(await answer(page, 'Reply all', 'Plans for the offsite'), {
        from: ALICE,
        to: `"Bob Smith" <${BOB}>`,
        cc: '"Carol" <carol@remote.example>, dave@remote.example',
      });
    }),
);

test(
  "a reply to a message of one's own goes to its recipients, not back to oneself",
  { timeout: 120_000 },
  () =>
    withPage(async (page) => {
      await page.getByRole('navigation', { name: 'Folders' }).getByRole('link', { name: /^Sent/ }).click();
      await open(page, 'Minutes of Monday');
      assert.deepEqual(await answer(page, 'Reply', 'Minutes of Monday'), {
        from: ALICE,
        to: `"Bob Smith" <${BOB}>, carol@remote.example`,
        cc: null,
      });
      assert.deepEqual(await answer(page, 'Reply all', 'Minutes of Monday'), {
        from: ALICE,
        to: `"Bob Smith" <${BOB}>, carol@remote.example`,
        cc: 'dave@remote.example',
      });
    }),
);

test(
  'a reply kept as a draft, reopened and sent, marks its original answered',
  { timeout: 120_000 },
  async () => {
    const subject = 'Room for Thursday';
    const imap = await storeSession(t, ALICE);
    try {
      await imap.append('INBOX', plainMessage({ subject, from: `"Bob Smith" <${BOB}>` }));
    } finally {
      await imap.logout();
    }
    await withPage(async (page) => {
      await open(page, subject);
      await page.getByRole('button', { name: 'Reply', exact: true }).click();
      const compose = page.getByRole('dialog', { name: `Re: ${subject}` });
      await compose.getByRole('textbox', { name: 'Message' }).fill('Booked the big room.');
      await compose.getByRole('button', { name: 'Close and keep the draft' }).click();
      await compose.waitFor({ state: 'detached' });
      await page
        .getByRole('navigation', { name: 'Folders' })
        .getByRole('link', { name: /^Drafts/ })
        .click();
      await open(page, `Re: ${subject}`);
      await page.getByRole('button', { name: 'Edit draft' }).click();
      const reopened = page.getByRole('dialog', { name: `Re: ${subject}` });
      await reopened.getByRole('button', { name: 'Send' }).click();
      await reopened.waitFor({ state: 'detached' });
    });
    const store = await storeSession(t, ALICE);
    try {
      await store.mailboxOpen('INBOX');
      const [uid] = (await store.search({ subject }, { uid: true })) || [];
      const original = await store.fetchOne(String(uid), { flags: true }, { uid: true });
      assert.ok(original && original.flags?.has('\\Answered'), 'the original is marked answered');
    } finally {
      await store.logout();
    }
    // where the draft kept its original stays on the server: not in what bob gets
    const mail = await waitFor(
      () =>
        t.p
          .inbox(BOB)
          .map((f) => readFileSync(f, 'utf8'))
          .find((m) => m.includes(`Subject: Re: ${subject}`)),
      { what: "the reply in bob's mailbox", timeoutMs: 30_000 },
    );
    assert.match(mail, /Booked the big room\./);
    assert.doesNotMatch(mail, /^X-Mailyard-/im);
  },
);
