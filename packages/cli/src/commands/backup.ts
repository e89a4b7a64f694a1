import { createWriteStream, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import type { Command } from 'commander';
import { AuditLog, restoreBackup, spoolToFile, writeBackup, type BackupTotals } from '@mailyard/admin';
import { cliActor, type CommandContext } from '../context.js';
import { CliError, usageError } from '../errors.js';
import { plural } from '@mailyard/smtp-core';

function size(bytes: number): string {
  if (bytes < 1024) return plural(bytes, 'byte');
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

function describe(t: BackupTotals): string {
  return `${plural(t.keys, 'Redis key')}, ${plural(t.accounts, 'mailbox', 'mailboxes')}, ${plural(t.folders, 'folder')}, ${plural(t.messages, 'message')} (${size(t.bytes)})`;
}

/** Writes the archive to a file next to FILE and renames it into place: no cut archive under FILE's name. */
async function backupToFile(
  file: string,
  write: (out: Writable) => Promise<BackupTotals>,
): Promise<BackupTotals> {
  if (
    await fs.stat(file).then(
      () => true,
      () => false,
    )
  )
    throw new CliError(`${file} already exists; choose another name or remove it first`);
  const partial = join(dirname(file), `.${basename(file)}.partial`);
  // the archive holds password hashes and DKIM private keys: readable by its owner only
  const out = createWriteStream(partial, { flags: 'wx', mode: 0o600 });
  const opened = new Promise<void>((resolve, reject) => {
    out.once('open', () => resolve());
    out.once('error', reject);
  });
  await opened.catch((err: NodeJS.ErrnoException) => {
    // a backup under way, or one killed before it finished, left its partial file
    if (err.code === 'EEXIST')
      throw new CliError(
        `${partial} exists: another backup to ${file} is running, or one was cut short (remove it then)`,
      );
    throw new CliError(`cannot write ${file} (${err.code ?? err.message})`);
  });
  let totals: BackupTotals;
  try {
    totals = await write(out);
    // on disk before it takes the name: a crash leaves no archive that looks whole and is not
    const fh = await fs.open(partial, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(partial, file);
  } catch (err) {
    out.destroy();
    await fs.unlink(partial).catch(() => undefined);
    throw err;
  }
  return totals;
}

/** `mailyard backup` and `mailyard restore`: the whole platform's data in one archive. */
export function registerBackupCommands(program: Command, ctx: CommandContext): void {
  program
    .command('backup')
    .description(
      "write the platform's data (Redis keys: domains, accounts, aliases, DKIM keys, policy; and the Maildirs) to one archive while it runs",
    )
    .argument(
      '<file>',
      'the archive to write (gzip-compressed tar, mode 0600); "-" writes it to standard output',
    )
    .action(async (file: string) => {
      const toStdout = file === '-';
      const stdout = ctx.deps.stdout;
      if (toStdout) {
        if (!(stdout instanceof Writable)) throw usageError('standard output cannot take the archive here');
        if ((stdout as Writable & { isTTY?: boolean }).isTTY)
          throw usageError(
            'will not write an archive to a terminal; give a file name or redirect standard output',
          );
      }
      let noStore: string | null = null;
      const totals = await ctx.withRedis(async (redis, config) => {
        const data = { redis, maildirRoot: config.maildir_root };
        // a backup without mail is right for a platform that has none yet, and wrong for
        // one whose MAILDIR_ROOT was not set here: the summary says which it was
        if (
          !(await fs.stat(config.maildir_root).then(
            () => true,
            () => false,
          ))
        )
          noStore = config.maildir_root;
        const t = toStdout
          ? await writeBackup(data, stdout as Writable)
          : await backupToFile(file, (out) => writeBackup(data, out));
        await new AuditLog(redis).record({
          actor: cliActor(ctx.deps.env),
          action: 'backup.create',
          target: toStdout ? '(standard output)' : file,
          detail: { ...t },
        });
        return t;
      });
      const line =
        `backed up ${describe(totals)}${toStdout ? '' : ` to ${file}`}` +
        (noStore ? ` (there is no ${noStore}: set MAILDIR_ROOT to the mail store's)` : '');
      const note =
        'it holds password hashes and DKIM private keys: keep it where only administrators can read it';
      if (toStdout) ctx.deps.stderr.write(`${line}\n${note}\n`);
      else ctx.print(`${line}\n${note} (written with mode 0600)`);
    });

  program
    .command('restore')
    .description(
      'restore an archive written by `mailyard backup` into an empty platform, and tell the running services to reload',
    )
    .argument('<file>', 'the archive; "-" reads it from standard input')
    .option(
      '--force',
      'restore into a platform that holds data: keys and files of the same name are replaced',
    )
    .option(
      '--new-uidvalidity',
      "give every folder a new UIDVALIDITY, so mail clients that saw later mail than the backup's read the folders again",
    )
    .action(async (file: string, opts: { force?: boolean; newUidvalidity?: boolean }) => {
      let path = file;
      let spool: string | null = null;
      try {
        if (file === '-') {
          // read twice (checked whole before anything is written), and removed whatever
          // happens: it holds password hashes and DKIM private keys
          spool = await fs.mkdtemp(join(tmpdir(), 'mailyard-restore-'));
          path = join(spool, 'backup');
          await spoolToFile(ctx.deps.stdin, path).catch((err: NodeJS.ErrnoException) => {
            throw new CliError(`cannot keep standard input in ${tmpdir()} (${err.code ?? err.message})`);
          });
        }
        const r = await ctx.withRedis(async (redis, config) => {
          const restored = await restoreBackup({ redis, maildirRoot: config.maildir_root }, path, {
            force: !!opts.force,
            newUidValidity: !!opts.newUidvalidity,
            name: file === '-' ? 'standard input' : file,
          });
          await new AuditLog(redis).record({
            actor: cliActor(ctx.deps.env),
            action: 'backup.restore',
            target: file === '-' ? '(standard input)' : file,
            detail: { created: restored.manifest.created, host: restored.manifest.host, force: !!opts.force },
          });
          return restored;
        });
        ctx.print(
          `restored ${describe(r)} from ${file === '-' ? 'standard input' : file} (made ${r.manifest.created} on ${r.manifest.host})`,
        );
      } finally {
        if (spool) await fs.rm(spool, { recursive: true, force: true });
      }
    });
}
