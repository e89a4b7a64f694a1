// Whether a bundle built by scripts/build-service.mjs is current: every file the build read
// (dist/build-inputs.json lists them, with the re-export files that add no code and so are
// missing from the source map), the package's manifest and what decides the rest of it (the
// lockfile and patches, which pick the third-party code it loads through dist/node_modules,
// and the build script) are still there and unchanged since the build STARTED, with each of
// those links still leading somewhere. A file saved while the build ran may or may not be in
// the bundle, so it makes the bundle stale too. A checkout runs a current bundle where it
// can: it starts in a third of the time tsx takes to compile the same sources. Anything else
// (a source edited or pulled since the build, an install since, no build, a build from
// before the list was written) is not current.
//
// A bundle that is not where its build wrote it (turbo's cache restores dist/ as new files,
// in a checkout whose files are as new: a worktree, a fresh clone) says nothing through
// the times of its files, and a file saved again unchanged (a branch switched to and back)
// says nothing either: then the bundle is current when each of those files still has the
// content the build read, by the digests the list also holds. A file saved while esbuild
// ran has no digest.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const repoRoot = new URL('..', import.meta.url).pathname;

/** @param {string} distDir the bundle's directory (dist/main.js and dist/build-inputs.json) */
export function bundleIsCurrent(distDir) {
  try {
    const { startedMs, inputs, bundleMs, digests } = JSON.parse(
      readFileSync(join(distDir, 'build-inputs.json'), 'utf8'),
    );
    if (typeof startedMs !== 'number' || !Array.isArray(inputs) || !inputs.length) return false;
    const bundleTime = statSync(join(distDir, 'main.js')).mtimeMs;
    // written after the build started: a bundle from before the list was, or a broken one
    if (!(bundleTime >= startedMs)) return false;
    const files = bundleFiles(distDir, inputs);
    // Where its build wrote it, each file strictly older than the start (one saved while
    // esbuild ran may not be in the bundle) is the quick answer.
    const byTime = bundleTime === bundleMs && files.every(({ path }) => statSync(path).mtimeMs < startedMs);
    // Else (a copy, or a file saved since with the same content: a branch switched to and
    // back) only the contents tell.
    if (
      !byTime &&
      !files.every(({ key, path }) => typeof digests?.[key] === 'string' && digests[key] === digest(path))
    )
      return false;
    const links = join(distDir, 'node_modules');
    if (!existsSync(links)) return true; // nothing third-party to load
    return readdirSync(links).every((name) =>
      name.startsWith('@')
        ? readdirSync(join(links, name)).every((sub) => existsSync(join(links, name, sub)))
        : existsSync(join(links, name)),
    );
  } catch {
    // no bundle, no list of its inputs, or a file it names is gone
    return false;
  }
}

/**
 * What decides a bundle (besides its list's own inputs, relative to distDir): each as
 * `{ key, path }`, key being its path relative to the bundle's real directory, as the
 * inputs are, so that a copy of the checkout elsewhere names the same files.
 * @param {string} distDir
 * @param {string[]} inputs
 */
export function bundleFiles(distDir, inputs) {
  const realDist = realpathSync(distDir);
  const own = (path) => ({ key: relative(realDist, path), path });
  return [
    ...inputs.map((p) => ({ key: p, path: join(distDir, p) })),
    own(join(repoRoot, 'pnpm-lock.yaml')),
    own(join(repoRoot, 'patches')),
    ...readdirSync(join(repoRoot, 'patches')).map((p) => own(join(repoRoot, 'patches', p))),
    own(join(repoRoot, 'scripts', 'build-service.mjs')),
  ];
}

/** A file's content, or a directory's names, as a hex SHA-256. */
export function digest(path) {
  const hash = createHash('sha256');
  if (statSync(path).isDirectory()) hash.update(readdirSync(path).sort().join('\n'));
  else hash.update(readFileSync(path));
  return hash.digest('hex');
}

/**
 * Node's arguments to run a service (`services/<name>`) or the CLI (`packages/cli`) as a
 * process from the repository root: its bundle, as the images run it, when it is current
 * (CI builds before it tests), else its source through tsx. Tests that start dozens of
 * processes feel the difference.
 * @param {string} packageDir
 */
export function entryArgs(packageDir) {
  return bundleIsCurrent(join(repoRoot, packageDir, 'dist'))
    ? [`${packageDir}/dist/main.js`]
    : ['--import', 'tsx', `${packageDir}/src/main.ts`];
}
