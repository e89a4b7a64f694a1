// A session script (`fixtures/*.smtp`), readable on its own:
//
//   # What the script checks and why, with the RFC section.
//   a> EHLO client.example.net      session "a" sends the line (CRLF added) and reads one
//                                   reply; replies compared
//   a- MAIL FROM:<a@b.example>      the same, reply not compared
//   a. Subject: hello               sent, no reply read (message content; `a.` alone: an
//                                   empty line)
//   a>3 MAIL FROM:<..>\r\nRCPT..    sent in one write, three replies read and compared
//   a> <closed>                     waits for the server to close the connection
//                                   ("closed", or "open" after a few seconds)
//   rfc> 501 5.1.7                  where Postfix departs from the RFC: what Mailyard must
//                                   answer instead (normalised form, one line a reply);
//                                   say why in a comment above
//
// In a line: `\r`, `\n`, `\t`, `\0`, `\\` and `\xHH` stand for those bytes, `{N*text}` for
// text written N times, and a final `\c` for no CRLF after the line. A session's first
// step connects and compares the greeting; sessions run in the order written.

import { rfcLine, scriptBytes } from '@mailyard/testkit';

export interface Step {
  session: string;
  /** The script's text of the step, for messages. */
  text: string;
  /** Bytes sent; null for `<closed>`. */
  send: Buffer | null;
  /** Replies read after sending. */
  replies: number;
  compare: boolean;
  /** What Mailyard must answer where the RFC and Postfix differ. */
  rfc: string[] | null;
  line: number;
}

export interface Script {
  name: string;
  steps: Step[];
}

export function parseScript(name: string, text: string): Script {
  const steps: Step[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, '');
    if (!line.trim() || line.startsWith('#')) continue;
    if (rfcLine(steps, line, `${name}:${i + 1}`)) continue;
    const step = /^([a-z])([>.-])(\d*)(?: (.*))?$/.exec(line);
    if (!step) throw new Error(`${name}:${i + 1}: cannot read ${JSON.stringify(line)}`);
    const [, session, mark, count] = step as unknown as [string, string, string, string];
    const body = step[4] ?? '';
    const closed = body === '<closed>';
    steps.push({
      session,
      text: body,
      send: closed ? null : scriptBytes(body),
      replies: mark === '.' || closed ? 0 : count ? Number(count) : 1,
      compare: mark === '>',
      rfc: null,
      line: i + 1,
    });
  }
  return { name, steps };
}
