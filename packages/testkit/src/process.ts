import { existsSync, readFileSync } from 'node:fs';

/** A process that exists and is not a zombie waiting to be reaped (Linux's /proc). */
export function processAlive(pid: number): boolean {
  const status = `/proc/${pid}/status`;
  if (!existsSync(status)) return false;
  return !/^State:\s+Z/m.test(readFileSync(status, 'utf8'));
}
export { entryArgs } from '../../../scripts/bundle-current.mjs';
