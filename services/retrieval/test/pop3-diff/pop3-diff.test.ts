// Differential POP3 test: every script in fixtures/ runs against Dovecot (Debian's
// dovecot-pop3d) and against Mailyard, each script's user with a maildrop of its own
// holding the script's messages on both, and the response to each compared step must be
// the same once normalised (see normalise.ts), or what the script's `rfc>` lines say
// where Dovecot departs from the RFC or we differ on purpose. The script format is
// described in script.ts.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { dovecotInstalled, LineClient, scriptDifferences, skipWithout } from '@mailyard/testkit';
import { addAccount } from '../../../../test/harness.js';
import { startDovecotBeside, type DovecotBeside } from '../dovecot-beside.js';
import { PASSWORD } from '../helpers.js';
import { multiLine, normaliseResponse, Uidls } from './normalise.js';
import { expand, parseScript, type Script, type Step } from './script.js';

const FIXTURES = join(import.meta.dirname, 'fixtures');
const only = process.env.POP3_DIFF_ONLY;
/** Prints each step's compared response and how long it took. */
const trace = !!process.env.POP3_DIFF_TRACE;
const scripts = readdirSync(FIXTURES)
  .filter((f) => f.endsWith('.pop3') && (!only || f.includes(only)))
  .sort()
  .map((f) => parseScript(f.replace(/\.pop3$/, ''), readFileSync(join(FIXTURES, f), 'utf8')));

/** How long a step waits for a response (a login may wait for Dovecot's auth process to start). */
const WAIT_MS = 10_000;
/** How long `<closed>` waits for the server to close the connection. */
const CLOSE_WAIT_MS = 2000;

/**
 * Dovecot answers a failed login at once, as Mailyard does for an account not under
 * attack. Its penalty for an address that failed (a login from it waits up to 15 s) stays:
 * each session comes from an address of its own (see clientAddress), so a script logs in
 * again after a failure in a new session.
 */
const DOVECOT_CONFIG = `
auth_failure_delay = 0
`;

/** A loopback address no other session of the run has used (the whole of 127/8 is local). */
let sessionCount = 0;
function clientAddress(): string {
  const n = sessionCount++;
  return `127.0.${1 + Math.floor(n / 250)}.${1 + (n % 250)}`;
}

/** Each script has a user (and a maildrop) of its own on both servers. */
const userOf = (script: Script) => `${script.name}@example.test`;

let servers: DovecotBeside;

const skip = skipWithout(dovecotInstalled('pop3'), 'dovecot-pop3d not installed');

before(async () => {
  if (skip) return;
  servers = await startDovecotBeside({
    name: 'pop3-diff',
    users: scripts.map(userOf),
    extraConfig: DOVECOT_CONFIG,
    pop3: true,
    // sessions come from all over 127/8 (see clientAddress)
    retrieval: { plaintext_auth_networks: '127.0.0.0/8' },
  });
});
after(() => servers?.close());

/** The next response to `command`, all its lines when it is multi-line; `(closed)` or `(none)` when there is none. */
async function response(c: LineClient, command: string): Promise<string[]> {
  const deadline = Date.now() + WAIT_MS;
  const next = () => c.line(deadline - Date.now()).catch(() => null);
  const first = await next();
  if (first === null) return [c.closed ? '(closed)' : '(none)'];
  const lines = [first];
  if (!first.startsWith('+OK') || !multiLine(command)) return lines;
  for (;;) {
    const l = await next();
    if (l === null) return [...lines, '(unterminated)'];
    lines.push(l);
    if (l === '.') return lines;
  }
}

async function runStep(c: LineClient, step: Step, user: string, uidls: Uidls): Promise<string[]> {
  if (step.close) {
    c.close();
    return [];
  }
  if (step.send === null) return [(await c.waitClosed(CLOSE_WAIT_MS)) ? 'closed' : 'open'];
  const bytes = expand(step.send, user, PASSWORD);
  c.write(bytes);
  // the command each response answers: the lines of what was sent, in order
  const commands = bytes.toString('latin1').split('\r\n');
  const out: string[] = [];
  for (let i = 0; i < step.responses; i++) {
    const command = commands[i] ?? '';
    const lines = await response(c, command);
    if (trace) console.log(`  < ${lines.slice(0, 3).join('\n  < ')}`);
    out.push(...normaliseResponse(command, lines, uidls));
  }
  return out;
}

/** Runs a script on one server: the compared responses of each compared step, greetings included. */
async function runScript(port: number, user: string, script: Script): Promise<string[][]> {
  const sessions = new Map<string, LineClient>();
  const uidls = new Uidls();
  const out: string[][] = [];
  try {
    for (const step of script.steps) {
      let c = sessions.get(step.session);
      if (!c) {
        c = await LineClient.connect(port, { localAddress: clientAddress() });
        sessions.set(step.session, c);
        out.push(normaliseResponse('', await response(c, ''), uidls));
      }
      const started = Date.now();
      const got = await runStep(c, step, user, uidls);
      if (trace)
        console.log(`${port} ${step.line} ${Date.now() - started}ms ${step.text}\n  ${got.join('\n  ')}`);
      if (step.compare) out.push(got);
    }
  } finally {
    for (const c of sessions.values()) c.close();
  }
  return out;
}

void describe('POP3 compared with Dovecot', { skip }, () => {
  for (const script of scripts) {
    void it(script.name, { timeout: 60_000 }, async () => {
      const user = userOf(script);
      await addAccount(servers.p.directory, user);
      servers.seed(
        user,
        script.messages.map((m) => m.data),
        'pop3-diff',
      );
      const theirs = await runScript(servers.dovecot.pop3Port!, user, script);
      const ours = await runScript(servers.r.ports.pop3, user, script);
      const diffs = scriptDifferences(script.steps, theirs, ours, 'dovecot');
      assert.equal(diffs.length, 0, `${script.name}: responses differ\n${diffs.join('\n')}`);
    });
  }
});
