// Whether a bundle built by scripts/build-service.mjs is newer than every source it was
// built from (the sources its map names). A checkout runs a current bundle where it can: it
// starts in a third of the time tsx takes to compile the same sources. A source edited or
// pulled since the build, a missing bundle or map, or a source gone: not current.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** @param {string} distDir the bundle's directory (dist/main.js and dist/main.js.map) */
export function bundleIsCurrent(distDir) {
  try {
    const built = statSync(join(distDir, 'main.js')).mtimeMs;
    const { sources } = JSON.parse(readFileSync(join(distDir, 'main.js.map'), 'utf8'));
    return sources.every((s) => statSync(join(distDir, s)).mtimeMs <= built);
  } catch {
    return false;
  }
}

const repoRoot = new URL('..', import.meta.url).pathname;

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
