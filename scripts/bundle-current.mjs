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
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

const repoRoot = new URL('..', import.meta.url).pathname;

/** @param {string} distDir the bundle's directory (dist/main.js and dist/build-inputs.json) */
export function bundleIsCurrent(distDir) {
  try {
    const { startedMs, inputs } = JSON.parse(readFileSync(join(distDir, 'build-inputs.json'), 'utf8'));
    if (typeof startedMs !== 'number' || !Array.isArray(inputs) || !inputs.length) return false;
    // written after the build started: a bundle from before the list was, or a broken one
    if (!(statSync(join(distDir, 'main.js')).mtimeMs >= startedMs)) return false;
    const files = [
      ...inputs.map((p) => join(distDir, p)),
      join(repoRoot, 'pnpm-lock.yaml'),
      join(repoRoot, 'patches'),
      ...readdirSync(join(repoRoot, 'patches')).map((p) => join(repoRoot, 'patches', p)),
      join(repoRoot, 'scripts', 'build-service.mjs'),
    ];
    // strictly older than the start: one saved while esbuild ran may not be in the bundle
    if (!files.every((p) => statSync(p).mtimeMs < startedMs)) return false;
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
