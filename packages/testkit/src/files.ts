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

/**
 * The messages of a Maildir folder, in new/ and cur/ (a reader moves numbered messages
 * from new/ to cur/, as Dovecot does): one path per message. new/ is listed first, so a
 * message moved between the two listings is found in cur/.
 */
export function maildirMessages(dir: string): string[] {
  const byBase = new Map<string, string>();
  for (const sub of ['new', 'cur']) {
    let names: string[];
    try {
      names = readdirSync(join(dir, sub));
    } catch {
      continue;
    }
    for (const n of names) byBase.set(n.split(':')[0]!, join(dir, sub, n));
  }
  return [...byBase.values()];
}

export function readFile(path: string): Buffer {
  return readFileSync(path);
}
