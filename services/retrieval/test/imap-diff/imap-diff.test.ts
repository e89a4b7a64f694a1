// Differential IMAP test: every script in fixtures/ runs against Dovecot (Debian's
// dovecot-imapd) and against Mailyard, each user with a Maildir of its own, empty but
// for the script's seeded messages, and the responses to each compared command must be
// the same once normalised (see normalise.ts), or what the script's `rfc>` lines say
// where Dovecot departs from the RFC. The script format is described in script.ts.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { dovecotInstalled, skipWithout } from '@mailyard/testkit';
import { addAccount } from '../../../../test/harness.js';
import { startDovecotBeside, type DovecotBeside } from '../dovecot-beside.js';
import { PASSWORD } from '../helpers.js';
import { ScriptClient } from './client.js';
import { newNormaliser, normaliseCommand, substituteNames } from './normalise.js';
import { parseScript, type Script } from './script.js';

const FIXTURES = join(import.meta.dirname, 'fixtures');
const only = process.env.IMAP_DIFF_ONLY;
const scripts = readdirSync(FIXTURES)
  .filter((f) => f.endsWith('.imap') && (!only || f.includes(only)))
  .sort()
  .map((f) => parseScript(f.replace(/\.imap$/, ''), readFileSync(join(FIXTURES, f), 'utf8')));

// Dovecot with Mailyard's hierarchy separator and default folders, so LIST can be compared.
const DOVECOT_CONFIG = `
namespace inbox {
  inbox = yes
  separator = /
  mailbox Sent {
    auto = subscribe
    special_use = \\Sent
  }
  mailbox Drafts {
    auto = subscribe
    special_use = \\Drafts
  }
  mailbox Junk {
    auto = subscribe
    special_use = \\Junk
  }
  mailbox Trash {
    auto = subscribe
    special_use = \\Trash
  }
  mailbox Archive {
    auto = subscribe
    special_use = \\Archive
  }
}
`;

/** Each script has a user (and empty Maildirs) of its own on both servers. */
const userOf = (script: Script) => `${script.name}@example.test`;

let servers: DovecotBeside;

const skip = skipWithout(dovecotInstalled(), 'dovecot-imapd not installed');

before(async () => {
  if (skip) return;
  servers = await startDovecotBeside({
    name: 'imap-diff',
    users: scripts.map(userOf),
    extraConfig: DOVECOT_CONFIG,
  });
});
after(() => servers?.close());

/**
 * RFC 7162 §3.1.2.1: a server that keeps mod-sequences sends HIGHESTMODSEQ on every
 * SELECT and EXAMINE; Dovecot sends it only once CONDSTORE is enabled. Where only Mailyard
 * sends it, it is left out before normalising (so it takes no MODSEQ name).
 */
function selectHighestModseq(command: string, ours: string[], theirs: string[]): string[] {
  const code = (l: string) => l.startsWith('* OK [HIGHESTMODSEQ ');
  if (!/^(SELECT|EXAMINE) /i.test(command) || theirs.some(code)) return ours;
  return ours.filter((l) => !code(l));
}

interface Transcript {
  /** The raw responses of each compared step. */
  raw: string[][];
  /** The same, normalised. */
  normalised: string[][];
}

/** Runs a script on one server; `reference` is Dovecot's transcript when this is Mailyard. */
async function runScript(
  port: number,
  user: string,
  script: Script,
  reference?: Transcript,
): Promise<Transcript> {
  const sessions = new Map<string, ScriptClient>();
  const n = newNormaliser();
  const out: Transcript = { raw: [], normalised: [] };
  try {
    for (const step of script.steps) {
      let c = sessions.get(step.session);
      if (!c) {
        c = await ScriptClient.open(port, step.session);
        sessions.set(step.session, c);
        const login = await c.run(`LOGIN ${user} "${PASSWORD}"`, script.messages);
        assert.match(login[login.length - 1]!, / OK/, `login of ${user}`);
      }
      let responses = await c.run(substituteNames(n, step.command), script.messages);
      if (!step.compare) continue;
      if (reference) responses = selectHighestModseq(step.command, responses, reference.raw[out.raw.length]!);
      out.raw.push(responses);
      out.normalised.push(
        normaliseCommand(n, responses).map((l) => Buffer.from(l, 'latin1').toString('utf8')),
      );
    }
  } finally {
    for (const c of sessions.values()) c.close();
  }
  return out;
}

/**
 * Whether the filesystem under `dir` moves a file time of 1900 elsewhere, as ext4 does
 * (it keeps 1901 to 2446); tmpfs and btrfs keep it as given.
 */
function clampsFileTimes(dir: string): boolean {
  const probe = mkdtempSync(join(dir, '.time-probe-'));
  try {
    const file = join(probe, 'f');
    writeFileSync(file, '');
    const t1900 = new Date('1900-01-01T00:00:00Z');
    utimesSync(file, t1900, t1900);
    return statSync(file).mtime.getTime() !== t1900.getTime();
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
}

/** Scripts that hold only where the mail store's filesystem keeps file times in a range. */
const NEEDS_CLAMPED_TIMES = new Set(['append-date-range']);

void describe('IMAP compared with Dovecot', { skip }, () => {
  for (const script of scripts) {
    void it(script.name, { timeout: 60_000 }, async (t) => {
      if (NEEDS_CLAMPED_TIMES.has(script.name) && !clampsFileTimes(servers.p.maildir))
        return t.skip('the mail store keeps any file time here');
      const user = userOf(script);
      await addAccount(servers.p.directory, user);
      if (script.seeded.length) servers.seed(user, script.seeded, 'imap-diff');
      const reference = await runScript(servers.dovecot.port, user, script);
      const theirs = reference.normalised;
      const ours = (await runScript(servers.r.ports.imap, user, script, reference)).normalised;
      const diffs: string[] = [];
      script.steps
        .filter((s) => s.compare)
        .forEach((step, i) => {
          const want = step.rfc ?? theirs[i]!;
          const got = ours[i]!;
          if (JSON.stringify(want) === JSON.stringify(got)) return;
          diffs.push(
            [
              `line ${step.line}: ${step.session}> ${step.command}`,
              ...want.map((l) => `  ${step.rfc ? 'rfc' : 'dovecot'}:  ${l}`),
              ...got.map((l) => `  mailyard: ${l}`),
            ].join('\n'),
          );
        });
      assert.equal(diffs.length, 0, `${script.name}: answers differ\n${diffs.join('\n')}`);
    });
  }
});
