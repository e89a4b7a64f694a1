// A session script (`fixtures/*.pop3`), readable on its own:
//
//   # What the script checks and why, with the RFC section.
//   message plain                 a message in the maildrop before the script starts, up
//   From: a@example.net           to a line holding only "." (LF line ends become CRLF; a
//   Subject: hello                line starting with "." is written ".."); messages are
//                                 numbered in the order written
//   body
//   .
//   message cut noeol             `noeol`: the last line has no line end; `lf`: line ends
//                                 are LF alone (as Dovecot's LDA writes them)
//   a> USER $user                 session "a" sends the line (CRLF added) and reads one
//                                 response (all of it when multi-line); compared
//   a- PASS $pass                 the same, response not compared
//   a>2 STAT\r\nLIST              sent in one write, a response to each line read, compared
//   a> <closed>                   waits for the server to close the connection ("closed",
//                                 or "open" after a few seconds)
//   a- <close>                    the client ends the connection (without QUIT)
//   rfc> -ERR [IN-USE]            where Dovecot departs from the RFC or we differ on
//                                 purpose: what Mailyard must answer instead (normalised
//                                 form, one line each); say why in a comment above
//
// `$user` and `$pass` are the script's user and password; `$plain` is the base64 of a SASL
// PLAIN response for them (RFC 4616) and `$plain-bad` the same with a wrong password. In a
// line, `\r`, `\n`, `\t`, `\0`, `\\` and `\xHH` stand for those bytes, `{N*text}` for text
// written N times, and a final `\c` for no CRLF after the line (testkit's scriptBytes). A
// session's first step connects and compares the greeting; sessions run in the order written.

import { rfcLine, scriptBytes } from '@mailyard/testkit';

export interface Message {
  name: string;
  data: Buffer;
}

export interface Step {
  session: string;
  /** The script's text of the step, for messages. */
  text: string;
  /** What to send; null for `<closed>` and `<close>`. */
  send: string | null;
  /** `<close>`: the client ends the connection. */
  close: boolean;
  /** Responses read after sending. */
  responses: number;
  compare: boolean;
  /** What Mailyard must answer where the RFC and Dovecot differ. */
  rfc: string[] | null;
  line: number;
}

export interface Script {
  name: string;
  messages: Message[];
  steps: Step[];
}

/** What a step's text stands for, for one user: the bytes to send. */
export function expand(text: string, user: string, password: string): Buffer {
  const plain = (pw: string) => Buffer.from(`\0${user}\0${pw}`, 'utf8').toString('base64');
  return scriptBytes(
    text
      .replace(/\$plain-bad\b/g, plain(`${password}-wrong`))
      .replace(/\$plain\b/g, plain(password))
      .replace(/\$user\b/g, user)
      .replace(/\$pass\b/g, password),
  );
}

export function parseScript(name: string, text: string): Script {
  const messages: Message[] = [];
  const steps: Step[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, '');
    if (!line.trim() || line.startsWith('#')) continue;
    const msg = /^message (\S+)((?: (?:noeol|lf))*)$/.exec(line);
    if (msg) {
      const body: string[] = [];
      for (i++; i < lines.length && lines[i] !== '.'; i++) body.push(lines[i]!.replace(/^\.\./, '.'));
      if (i >= lines.length) throw new Error(`${name}:${i}: message ${msg[1]} has no closing "."`);
      const eol = msg[2]!.includes('lf') ? '\n' : '\r\n';
      const data = body.join(eol) + (msg[2]!.includes('noeol') ? '' : eol);
      messages.push({ name: msg[1]!, data: Buffer.from(data, 'utf8') });
      continue;
    }
    if (rfcLine(steps, line, `${name}:${i + 1}`)) continue;
    const step = /^([a-z])([>-])(\d*)(?: (.*))?$/.exec(line);
    if (!step) throw new Error(`${name}:${i + 1}: cannot read ${JSON.stringify(line)}`);
    const body = step[4] ?? '';
    const closed = body === '<closed>';
    const close = body === '<close>';
    steps.push({
      session: step[1]!,
      text: body,
      send: closed || close ? null : body,
      close,
      responses: closed || close ? 0 : step[3] ? Number(step[3]) : 1,
      compare: step[2] === '>',
      rfc: null,
      line: i + 1,
    });
  }
  return { name, messages, steps };
}
