// The direction of imports inside retrieval, checked: no module imports one that imports
// it back (type-only imports count too, they tie the modules as much), and the IMAP
// commands see their session only through the context type, never the session class.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import ts from 'typescript';

const SRC = resolve(import.meta.dirname, '../src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') ? [p] : [];
  });
}

/** Each source file (relative to src) and the source files it imports. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sources(SRC)) {
    const info = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
    const deps = info.importedFiles
      .map((f) => f.fileName)
      .filter((spec) => spec.startsWith('.'))
      .map((spec) => relative(SRC, resolve(dirname(file), spec.replace(/\.js$/, '.ts'))));
    graph.set(relative(SRC, file), deps);
  }
  return graph;
}

/** Every cycle found by a depth-first walk, each as the chain of files that closes it. */
function cycles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const done = new Set<string>();
  const path: string[] = [];
  const visit = (file: string): void => {
    const at = path.indexOf(file);
    if (at >= 0) {
      found.push([...path.slice(at), file]);
      return;
    }
    if (done.has(file)) return;
    path.push(file);
    for (const dep of graph.get(file) ?? []) visit(dep);
    path.pop();
    done.add(file);
  };
  for (const file of [...graph.keys()].sort()) visit(file);
  return found;
}

test('no import cycle in retrieval', { timeout: 30_000 }, () => {
  const graph = importGraph();
  assert.ok(graph.has('imap/session.ts'), 'the walk found the sources');
  assert.deepEqual(
    cycles(graph).map((c) => c.join(' -> ')),
    [],
  );
});

test('IMAP commands do not import the session', { timeout: 30_000 }, () => {
  const offending = [...importGraph()]
    .filter(([file, deps]) => file.startsWith('imap/commands') && deps.includes('imap/session.ts'))
    .map(([file]) => file);
  assert.deepEqual(offending, []);
});
