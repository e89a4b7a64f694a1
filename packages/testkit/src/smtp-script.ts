// SMTP session scripts (`fixtures/*.smtp` of mta-inbound's smtp-diff and the msa's
// submission-diff), readable on their own:
//
//   # What the script checks and why, with the RFC section.
//   a> EHLO client.example.net      session "a" sends the line (CRLF added) and reads one
//                                   reply; replies compared
//   a- MAIL FROM:<a@b.example>      the same, reply not compared
//   a. Subject: hello               sent, no reply read (message content; `a.` alone: an
//                                   empty line)
//   a>3 MAIL FROM:<..>\r\nRCPT..    sent in one write, three replies read and compared
//   a> STARTTLS                     a STARTTLS line answered 220 starts TLS on the session
//   a> <closed>                     waits for the server to close the connection
//                                   ("closed", or "open" after a few seconds)
//   b> <tls>                        only as a session's first step: it connects to the
//                                   implicit-TLS port (RFC 8314 §3.3), with the handshake
//                                   before the greeting
//   rfc> 501 5.1.7                  where the reference server departs from the RFC: what
//                                   Mailyard must answer instead (normalised form, one
//                                   line a reply); say why in a comment above
//
// In a line: `\r`, `\n`, `\t`, `\0`, `\\` and `\xHH` stand for those bytes, `{N*text}` for
// text written N times, `{base64:text}` for the base64 of text, and a final `\c` for no CRLF
// after the line (scriptBytes). A session's first step connects and compares the greeting;
// sessions run in the order written.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RawSmtp } from './smtp-raw.js';
import { rfcLine, scriptBytes } from './session-script.js';

export interface SmtpStep {
  session: string;
  /** The script's text of the step, for messages. */
  text: string;
  /** Bytes sent; null for `<closed>` and `<tls>`. */
  send: Buffer | null;
  /** `<closed>`: wait for the server to close; `<tls>`: connect to the implicit-TLS port. */
  action: 'closed' | 'tls' | null;
  /** Replies read after sending. */
  replies: number;
  compare: boolean;
  /** What Mailyard must answer where the RFC and the reference server differ. */
  rfc: string[] | null;
  line: number;
}

export interface SmtpScript {
  name: string;
  steps: SmtpStep[];
}

export function parseSmtpScript(name: string, text: string): SmtpScript {
  const steps: SmtpStep[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, '');
    if (!line.trim() || line.startsWith('#')) continue;
    if (rfcLine(steps, line, `${name}:${i + 1}`)) continue;
    const step = /^([a-z])([>.-])(\d*)(?: (.*))?$/.exec(line);
    if (!step) throw new Error(`${name}:${i + 1}: cannot read ${JSON.stringify(line)}`);
    const [, session, mark, count] = step as unknown as [string, string, string, string];
    const body = step[4] ?? '';
    const action = body === '<closed>' ? 'closed' : body === '<tls>' ? 'tls' : null;
    if (action === 'tls' && steps.some((s) => s.session === session))
      throw new Error(`${name}:${i + 1}: <tls> must be the first step of its session`);
    steps.push({
      session,
      text: body,
      send: action ? null : scriptBytes(body),
      action,
      replies: mark === '.' || action ? 0 : count ? Number(count) : 1,
      compare: mark === '>' && action !== 'tls',
      rfc: null,
      line: i + 1,
    });
  }
  return { name, steps };
}

/** The scripts (`*.smtp`) of `dir` by name; SMTP_DIFF_ONLY=text keeps those whose file name has it. */
export function readSmtpScripts(dir: string): SmtpScript[] {
  const only = process.env.SMTP_DIFF_ONLY;
  return readdirSync(dir)
    .filter((f) => f.endsWith('.smtp') && (!only || f.includes(only)))
    .sort()
    .map((f) => parseSmtpScript(f.replace(/\.smtp$/, ''), readFileSync(join(dir, f), 'utf8')));
}

/**
 * Turns a server's reply into what two servers can be compared on: the reply code and the
 * enhanced status code (RFC 3463), never the text. An EHLO reply becomes its code and the
 * extension keywords of `keywords` it names (without their arguments: SIZE's value is
 * each server's limit), but for AUTH, whose mechanisms are compared (`AUTH=LOGIN,PLAIN`).
 */
export function normaliseSmtpReply(lines: string[], ehlo: boolean, keywords: ReadonlySet<string>): string {
  const last = lines[lines.length - 1]!;
  const code = last.slice(0, 3);
  if (ehlo && lines.length > 1) {
    const named = lines
      .slice(1)
      .map((l) => l.slice(4).toUpperCase().split(' '))
      .filter(([k]) => keywords.has(k!))
      .map(([k, ...args]) => (k === 'AUTH' ? `AUTH=${args.sort().join(',')}` : k!))
      .sort();
    return [code, ...named].join(' ');
  }
  const enhanced = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})(?: |$)/.exec(last)?.[1];
  return enhanced ? `${code} ${enhanced}` : code;
}

export interface SmtpTarget {
  port: number;
  /** The implicit-TLS port, for sessions that start with `<tls>`. */
  tlsPort?: number;
  /** The address the sessions come from (a 127.0.0.x), the system's choice when absent. */
  localAddress?: string;
  /** The EHLO keywords compared (normaliseSmtpReply). */
  keywords: ReadonlySet<string>;
}

/** The next reply in compared form; `(closed)` or `(none)` when there is none. */
async function reply(c: RawSmtp, ehlo: boolean, target: SmtpTarget): Promise<string> {
  try {
    const r = await c.read(3000);
    return normaliseSmtpReply(r.lines, ehlo, target.keywords);
  } catch {
    return c.closed ? '(closed)' : '(none)';
  }
}

async function runStep(c: RawSmtp, step: SmtpStep, target: SmtpTarget): Promise<string[]> {
  if (!step.send) {
    try {
      await c.waitClosed(3000);
      return ['closed'];
    } catch {
      return ['open'];
    }
  }
  if (!c.closed) c.write(step.send);
  const out: string[] = [];
  for (let i = 0; i < step.replies; i++) out.push(await reply(c, /^EHLO /i.test(step.text), target));
  // RFC 3207 §4: the handshake starts once the server said 220
  if (/^STARTTLS$/i.test(step.text) && out.length === 1 && out[0]!.startsWith('220')) await c.startTls();
  return out;
}

/**
 * Runs a script on one server: the compared replies of each compared step, greetings
 * included, in script order (what scriptDifferences takes).
 */
export async function runSmtpScript(target: SmtpTarget, script: SmtpScript): Promise<string[][]> {
  const sessions = new Map<string, RawSmtp>();
  const out: string[][] = [];
  const from = target.localAddress ? { localAddress: target.localAddress } : {};
  try {
    for (const step of script.steps) {
      let c = sessions.get(step.session);
      if (!c) {
        if (step.action === 'tls' && !target.tlsPort)
          throw new Error(`line ${step.line}: no implicit-TLS port`);
        c =
          step.action === 'tls'
            ? await RawSmtp.connectTls(target.tlsPort!, '127.0.0.1', from)
            : await RawSmtp.connect(target.port, '127.0.0.1', from);
        sessions.set(step.session, c);
        out.push([await reply(c, false, target)]);
        if (step.action === 'tls') continue;
      }
      const replies = await runStep(c, step, target);
      if (step.compare) out.push(replies);
    }
  } finally {
    for (const c of sessions.values()) c.close();
  }
  return out;
}
