// `pnpm bench:mailstore`: the CPU one change of a busy folder costs, without IMAP or the
// network around it. One folder of --messages (1,000) is served by two MailFolder objects
// on the same directory, each with its own caches, as two retrieval workers are; each of
// --ops (1,000) changes is made by one of them at random (half STORE, three tenths APPEND,
// the rest EXPUNGE of what was appended), and after every change each asks for a snapshot
// three times, as its sessions do after their commands. --one-process uses a single object.
// Prints the process's CPU time (user + system) and wall time per change. On a shared VM
// single runs vary by a fifth: compare builds in alternating runs.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { MailFolder } from '@mailyard/mailstore';

const { values } = parseArgs({
  options: {
    messages: { type: 'string', default: '1000' },
    ops: { type: 'string', default: '1000' },
    'one-process': { type: 'boolean', default: false },
  },
});
const N = Number(values.messages);
const OPS = Number(values.ops);
const root = mkdtempSync(join(tmpdir(), 'mailyard-bench-mailstore-'));
const dir = join(root, 'INBOX');
const body = (i: number) => Buffer.from(`Subject: m${i}\r\n\r\n${'x'.repeat(2000)}\r\n`);

async function main(): Promise<void> {
  const a = new MailFolder(dir, 'INBOX', 'bench');
  await a.ensure();
  const date = new Date();
  await a.appendMany(
    Array.from({ length: N }, (_, i) => ({ data: body(i), flags: i % 3 ? ['\\Seen'] : [], date })),
  );
  const b = values['one-process'] ? a : new MailFolder(dir, 'INBOX', 'bench');
  // the same sequence of changes in every run
  let seed = 42;
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  const run = async (ops: number) => {
    const mine: number[] = [];
    for (let i = 0; i < ops; i++) {
      const f = rnd() < 0.5 ? a : b;
      const snap = await f.snapshot();
      const r = rnd();
      if (r < 0.5) {
        const m = snap.messages[Math.floor(rnd() * snap.messages.length)]!;
        await f.store([{ uid: m.uid, op: rnd() < 0.5 ? 'add' : 'remove', flags: ['\\Flagged'] }]);
      } else if (r < 0.8) {
        mine.push((await f.append(body(i), ['\\Seen'], new Date())).uid);
      } else if (mine.length) {
        await f.expunge(mine.splice(0));
      }
      for (let k = 0; k < 3; k++) {
        await a.snapshot();
        if (b !== a) await b.snapshot();
      }
    }
  };
  await run(300); // compiled and cached as in a running service
  const cpu = process.cpuUsage();
  const wall = performance.now();
  await run(OPS);
  const used = process.cpuUsage(cpu);
  const per = (us: number) => (us / 1000 / OPS).toFixed(3);
  process.stdout.write(
    `${b === a ? 'one process' : 'two processes'}, ${N} messages, ${OPS} changes: ` +
      `${per(used.user + used.system)} ms CPU per change (user ${per(used.user)}), ` +
      `wall ${((performance.now() - wall) / OPS).toFixed(3)} ms\n`,
  );
}

main()
  .catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(() => rmSync(root, { recursive: true, force: true }));
