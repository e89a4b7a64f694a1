// Builds one service into dist/main.js. Run from the service's directory (its
// `pnpm build` script does that): node ../../scripts/build-service.mjs
//
// Our own code (@mailyard/* workspace packages export TypeScript source) is bundled;
// third-party packages stay external, so native addons (@node-rs/argon2), the patched
// smtp-server and CommonJS packages load from node_modules exactly as in the tests.
//
// pnpm's node_modules is strict: a package can import only what it declares, so
// `amqplib`, which @mailyard/bus declares, is not reachable from services/delivery/dist.
// For each external package the bundle imports, dist/node_modules/<name> is therefore a
// relative symlink to the copy that the importing workspace package resolves to. Node
// finds it first from dist/main.js and follows it, so the bundle runs against the same
// versions the workspace was tested with, here and in the image (deploy/Dockerfile), where
// the same lockfile lays out node_modules identically.
import { build } from 'esbuild';
import { builtinModules } from 'node:module';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { bundleFiles, digest } from './bundle-current.mjs';

const serviceDir = realpathSync(process.cwd());
const entry = join(serviceDir, 'src', 'main.ts');
// --outdir DIR builds elsewhere (test/deploy.test.ts builds into a temporary directory).
const outdirArg = process.argv.indexOf('--outdir');
const outDir = outdirArg === -1 ? join(serviceDir, 'dist') : resolve(process.argv[outdirArg + 1] ?? 'dist');
const { name: serviceName } = JSON.parse(readFileSync(join(serviceDir, 'package.json'), 'utf8'));

if (!existsSync(entry)) fail(`${serviceName}: no src/main.ts to build`);

const builtins = new Set(builtinModules);
/** Package name -> { dir: real directory, importer: file that imported it first }. */
const externals = new Map();

/** `@scope/name/sub/path` -> `@scope/name`, `name/sub` -> `name`. */
const packageName = (spec) =>
  spec
    .split('/')
    .slice(0, spec.startsWith('@') ? 2 : 1)
    .join('/');

/** Where Node would find package `name` from directory `from`: the nearest node_modules/<name> up the tree. */
function findPackageDir(name, from) {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return realpathSync(candidate);
    if (dirname(dir) === dir) return null;
  }
}

const externalThirdParty = {
  name: 'external-third-party',
  setup(b) {
    // Bare specifiers only; relative imports are our own files.
    b.onResolve({ filter: /^[^./]/ }, (args) => {
      if (args.path.startsWith('node:') || builtins.has(args.path)) return { external: true };
      if (args.path.startsWith('@mailyard/')) return undefined; // bundled
      const name = packageName(args.path);
      const dir = findPackageDir(name, args.resolveDir);
      if (!dir) {
        return {
          errors: [{ text: `cannot find package ${name} from ${relative(serviceDir, args.importer)}` }],
        };
      }
      const seen = externals.get(name);
      if (!seen) externals.set(name, { dir, importer: args.importer });
      else if (seen.dir !== dir) {
        return {
          errors: [
            {
              text:
                `${name} resolves to two different copies: ${relative(serviceDir, seen.dir)} ` +
                `(from ${relative(serviceDir, seen.importer)}) and ${relative(serviceDir, dir)}; ` +
                `align the versions in the package.json files so the bundle can use one`,
            },
          ],
        };
      }
      return { external: true };
    });
  },
};

if (
  outdirArg !== -1 &&
  existsSync(outDir) &&
  readdirSync(outDir).length &&
  !existsSync(join(outDir, 'main.js'))
) {
  fail(`${outDir} is not empty and holds no earlier build; not removing it`);
}
rmSync(outDir, { recursive: true, force: true });
// When the build started, by the file system's clock (the one that stamps a saved file):
// scripts/bundle-current.mjs takes a file changed since then, even while esbuild ran, as
// possibly not in the bundle. The file is rewritten with the inputs once the build is done.
const inputsFile = join(outDir, 'build-inputs.json');
mkdirSync(outDir, { recursive: true });
writeFileSync(inputsFile, '{}\n');
const startedMs = statSync(inputsFile).mtimeMs;
let metafile;
try {
  ({ metafile } = await build({
    entryPoints: [entry],
    outfile: join(outDir, 'main.js'),
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    sourcemap: true,
    // Ensures esbuild's require() shim works if bundled code ever calls require().
    banner: {
      js: "import { createRequire as __mailyardCreateRequire } from 'node:module';\nconst require = __mailyardCreateRequire(import.meta.url);",
    },
    plugins: [externalThirdParty],
    logLevel: 'warning',
    // Every file the build read, including those that add no code (a re-export index.ts),
    // which the source map leaves out.
    metafile: true,
  }));
} catch {
  // esbuild has already printed the errors with their locations.
  fail(`${serviceName}: build failed`);
}

// Relative to the real location, which is where the OS resolves a relative link from.
const linkRoot = join(realpathSync(outDir), 'node_modules');
for (const [name, { dir }] of [...externals].sort(([a], [b]) => a.localeCompare(b))) {
  const link = join(linkRoot, name);
  mkdirSync(dirname(link), { recursive: true });
  symlinkSync(relative(dirname(link), dir), link, 'dir');
}
// Relative to the bundle, as the source map's paths are.
const inputs = [
  ...Object.keys(metafile.inputs).map((p) => resolve(p)), // relative to the working directory
  join(serviceDir, 'package.json'),
].map((p) => relative(realpathSync(outDir), p));
// The content of each file the bundle depends on, for a copy of it (turbo's cache restores
// dist/ with new times) to be judged by. Only of a file unchanged since the build started,
// before and after it is read: one saved meanwhile may differ from what esbuild read, and
// without a digest it makes a copy stale.
const digests = {};
for (const { key, path } of bundleFiles(outDir, inputs)) {
  const before = statSync(path).mtimeMs;
  if (before >= startedMs) continue;
  const value = digest(path);
  if (statSync(path).mtimeMs === before) digests[key] = value;
}
// how scripts/bundle-current.mjs tells this bundle from a copy of it
const bundleMs = statSync(join(outDir, 'main.js')).mtimeMs;
writeFileSync(inputsFile, `${JSON.stringify({ startedMs, bundleMs, inputs, digests }, null, 2)}\n`);
process.stdout.write(
  `${serviceName}: ${relative(resolve(serviceDir, '../..'), join(outDir, 'main.js'))} ` +
    `(external: ${[...externals.keys()].sort().join(', ') || 'none'})\n`,
);

function fail(message) {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}
