import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';

/** A process that exists and is not a zombie waiting to be reaped (Linux's /proc). */
export function processAlive(pid: number): boolean {
  const status = `/proc/${pid}/status`;
  if (!existsSync(status)) return false;
  return !/^State:\s+Z/m.test(readFileSync(status, 'utf8'));
}
export { entryArgs } from '../../../scripts/bundle-current.mjs';

/**
 * Runs `script` (ESM, with tsx for TypeScript imports) in a node process in which the
 * package `missing` cannot be resolved, as after a broken install; resolves with what the
 * script printed.
 */
export async function runWithoutPackage(missing: string, script: string): Promise<string> {
  const hooks = `export async function resolve(spec, ctx, next) {
    if (spec === ${JSON.stringify(missing)}) throw new Error(${JSON.stringify(`${missing} missing`)});
    return next(spec, ctx);
  }`;
  const register = `import { register } from 'node:module';
    register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hooks)}));`;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', '--import', `data:text/javascript,${encodeURIComponent(register)}`, '-e', script],
    { timeout: 30_000 },
  );
  return stdout;
}
