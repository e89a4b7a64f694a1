// A real browser for the end-to-end tests: Debian's Chromium driven by playwright-core
// (no browser download), headless, and the front end built. One Chromium serves a whole
// test file (starting one is the slow part): each test gets a context of its own in it,
// with nothing of another's (cookies, storage, cache), and it is closed after the file's
// tests.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { HOST } from './webmail-harness.js';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const serviceDir = new URL('..', import.meta.url).pathname;

function newest(dir: string): number {
  let t = 0;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = statSync(p);
    t = Math.max(t, st.isDirectory() ? newest(p) : st.mtimeMs);
  }
  return t;
}

/** Builds the front end (vite) when dist/public is missing or older than its sources. */
export function ensureFrontEnd(): void {
  const index = join(serviceDir, 'dist', 'public', 'index.html');
  const sources = Math.max(
    newest(join(serviceDir, 'web')),
    statSync(join(serviceDir, 'src', 'api-types.ts')).mtimeMs,
    statSync(join(serviceDir, 'src', 'admin-api-types.ts')).mtimeMs,
  );
  if (existsSync(index) && statSync(index).mtimeMs >= sources) return;
  const res = spawnSync(
    process.execPath,
    [
      join(serviceDir, 'node_modules', 'vite', 'bin', 'vite.js'),
      'build',
      '--config',
      'web/vite.config.ts',
      '--logLevel',
      'warn',
    ],
    { cwd: serviceDir, encoding: 'utf8', timeout: 120_000 },
  );
  if (res.status !== 0) throw new Error(`the front end did not build: ${res.stderr}${res.stdout}`);
}

/** The file's Chromium, started by the first test that asks for a browser. */
let chromiumOfFile: Promise<Browser> | null = null;
after(async () => {
  const browser = chromiumOfFile;
  chromiumOfFile = null;
  await (await browser?.catch(() => null))?.close();
});

/**
 * A browser with a fresh profile (a new context of the file's Chromium); `close` ends it.
 * `clientAddress`: the address it comes from as the webmail sees it (X-Forwarded-For
 * through the test webmail's trusted proxy setting), so that the logins of one test do
 * not count against another's in the per-address login limit, as the API tests' clients do.
 */
export async function launchBrowser(
  viewport = { width: 1280, height: 800 },
  opts: { clientAddress?: string } = {},
): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  chromiumOfFile ??= chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--host-resolver-rules=MAP ${HOST} 127.0.0.1`,
    ],
  });
  const context = await (
    await chromiumOfFile
  ).newContext({
    viewport,
    ...(opts.clientAddress ? { extraHTTPHeaders: { 'X-Forwarded-For': opts.clientAddress } } : {}),
    // the platform's certificate is a test one, for mail.mailyard.test
    ignoreHTTPSErrors: true,
  });
  return { context, close: () => context.close() };
}

/** Where screenshots go: WEBMAIL_SCREENSHOTS_DIR (docs/screenshots to refresh the docs), else a temporary directory. */
export function screenshotDir(): string {
  const dir = process.env.WEBMAIL_SCREENSHOTS_DIR ?? join(tmpdir(), 'mailyard-webmail-screenshots');
  return dir;
}

/**
 * Runs `fn` on a page of a browser of its own (coming from `clientAddress`), then checks that
 * no script error happened on the page; the browser is closed whatever happens.
 */
export async function onNewPage(clientAddress: string, fn: (page: Page) => Promise<void>): Promise<void> {
  const browser = await launchBrowser(undefined, { clientAddress });
  const errors: string[] = [];
  try {
    const page = await browser.context.newPage();
    page.on('pageerror', (e) => errors.push(e.message));
    await fn(page);
    assert.deepEqual(errors, [], 'script errors on the page');
  } finally {
    await browser.close();
  }
}
