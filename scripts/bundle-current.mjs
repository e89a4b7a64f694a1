// Whether a bundle built by scripts/build-service.mjs is current: newer than every source
// it was built from (the sources its map names) and than what decides the rest of it (the
// lockfile and patches, which pick the third-party code it loads through dist/node_modules,
// the package's manifest and the build script), with each of those links still leading
// somewhere. A checkout runs a current bundle where it can: it starts in a third of the time
// tsx takes to compile the same sources. Anything else (a source edited or pulled since the
// build, an install since, no build) is not current.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

const repoRoot = new URL('..', import.meta.url).pathname;

/** @param {string} distDir the bundle's directory (dist/main.js and dist/main.js.map) */
export function bundleIsCurrent(distDir) {
  try {
    const built = statSync(join(distDir, 'main.js')).mtimeMs;
    const { sources } = JSON.parse(readFileSync(join(distDir, 'main.js.map'), 'utf8'));
    const inputs = [
      ...sources.map((s) => join(distDir, s)),
      join(distDir, '..', 'package.json'),
      join(repoRoot, 'pnpm-lock.yaml'),
      join(repoRoot, 'patches'),
      ...readdirSync(join(repoRoot, 'patches')).map((p) => join(repoRoot, 'patches', p)),
      join(repoRoot, 'scripts', 'build-service.mjs'),
    ];
    // strictly older: a source saved while the build ran may not be in it
    if (!inputs.every((p) => statSync(p).mtimeMs < built)) return false;
    const links = join(distDir, 'node_modules');
    return readdirSync(links).every((name) =>
      name.startsWith('@')
        ? readdirSync(join(links, name)).every((sub) => existsSync(join(links, name, sub)))
        : existsSync(join(links, name)),
    );
  } catch {
    // no bundle, no map, or a source it names is gone
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
