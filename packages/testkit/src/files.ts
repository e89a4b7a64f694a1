import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function tempDir(prefix = 'mailyard-'): { path: string; cleanup(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** Files in a Maildir folder's new/ (the Maildir's root for INBOX). */
export function maildirNew(dir: string): string[] {
  try {
    return readdirSync(join(dir, 'new')).map((f) => join(dir, 'new', f));
  } catch {
    return [];
  }
}

export function readFile(path: string): Buffer {
  return readFileSync(path);
}
