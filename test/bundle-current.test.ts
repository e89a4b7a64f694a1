// scripts/bundle-current.mjs decides whether the CLI, `pnpm start` and the tests that start
// services as processes run a package's bundle or its source. A stale bundle that passes
// for current runs old code: what the checkout says is not what runs. Built here for real
// (scripts/build-service.mjs, as `pnpm build` runs it) from a small package in a temporary
// directory, whose files' times the test sets itself.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { bundleIsCurrent } from '../scripts/bundle-current.mjs';

const root = new URL('..', import.meta.url).pathname;
const pkg = mkdtempSync(join(tmpdir(), 'mailyard-bundle-current-'));
after(() => rmSync(pkg, { recursive: true, force: true }));
const dist = join(pkg, 'dist');
const src = (path: string) => join(pkg, 'src', path);

const files: Record<string, string> = {
  'package.json': '{ "name": "bundle-probe", "private": true, "type": "module" }\n',
  'src/main.ts': "import { greeting } from './lib/index.js';\nconsole.log(greeting);\n",
  // a re-export file: it adds no code to the bundle
  'src/lib/index.ts': "export { greeting } from './old.js';\n",
  'src/lib/old.ts': "export const greeting = 'old';\n",
  'src/lib/new.ts': "export const greeting = 'new';\n",
};

/** The package as above, every file saved a minute ago, and `pnpm build` in it. */
function build(): void {
  mkdirSync(src('lib'), { recursive: true });
  const before = Date.now() / 1000 - 60;
  for (const [path, text] of Object.entries(files)) {
    writeFileSync(join(pkg, path), text);
    utimesSync(join(pkg, path), before, before);
  }
  runBuild();
  assert.ok(bundleIsCurrent(dist), 'a bundle is current right after its build');
}

/** A build during which src/lib/old.ts was saved, as far as its time tells: esbuild may have read it before. */
function buildWhileSaving(): void {
  build();
  const during = Date.now() / 1000 + 60;
  utimesSync(src('lib/old.ts'), during, during);
  runBuild();
}

function runBuild(): void {
  const res = spawnSync(process.execPath, [join(root, 'scripts', 'build-service.mjs')], {
    cwd: pkg,
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.equal(res.status, 0, res.stderr);
}

test('pointing a re-export index.ts at another file makes the bundle stale', () => {
  build();
  writeFileSync(src('lib/index.ts'), "export { greeting } from './new.js';\n");
  assert.equal(bundleIsCurrent(dist), false);
});

test('a source saved while the build ran (before the bundle was written) makes it stale', () => {
  buildWhileSaving();
  assert.equal(bundleIsCurrent(dist), false);
});

test('a source saved again with the same content leaves the bundle current', () => {
  build();
  // a branch switched to and back: the file is rewritten as it was
  writeFileSync(src('lib/old.ts'), files['src/lib/old.ts']!);
  assert.ok(statSync(src('lib/old.ts')).mtimeMs > statSync(join(dist, 'main.js')).mtimeMs);
  assert.equal(bundleIsCurrent(dist), true);
});

test('a bundle whose build did not list its inputs is not current', () => {
  build();
  rmSync(join(dist, 'build-inputs.json'));
  assert.equal(bundleIsCurrent(dist), false);
});

test('a source the build read that is gone makes the bundle stale', () => {
  build();
  rmSync(src('lib/old.ts'));
  assert.equal(bundleIsCurrent(dist), false);
});

/**
 * What a turbo cache hit leaves: dist/ written anew (the same bytes, the times of now) in
 * a checkout whose files are newer than the build that made it (a worktree, a clone).
 */
function restoreFromCache(): void {
  for (const name of ['main.js', 'main.js.map', 'build-inputs.json']) {
    const path = join(dist, name);
    const bytes = readFileSync(path);
    rmSync(path);
    writeFileSync(path, bytes);
  }
  const later = Date.now() / 1000;
  for (const path of Object.keys(files)) utimesSync(join(pkg, path), later, later);
}

test('a bundle restored from the build cache into a newer checkout of its sources is current', () => {
  build();
  restoreFromCache();
  assert.equal(bundleIsCurrent(dist), true);
});

test('a restored bundle whose sources differ from those it was built from is stale', () => {
  build();
  restoreFromCache();
  writeFileSync(src('lib/index.ts'), "export { greeting } from './new.js';\n");
  assert.equal(bundleIsCurrent(dist), false);
});

test('a restored bundle is stale if a source was saved while its build ran', () => {
  buildWhileSaving();
  restoreFromCache();
  assert.equal(bundleIsCurrent(dist), false);
});
