// A session script (`fixtures/*.imap`), readable on its own:
//
//   # What the script checks and why, with the RFC section.
//   message plain                 a fixture message, up to a line holding only "."
//   From: a@example.net           (LF line ends become CRLF; a line starting with "."
//   Subject: hello                 is written "..")
//
//   body
//   .
//   message old lf seeded         `lf`: line ends are LF alone; `seeded`: a file in INBOX's
//   From: b@example.net           new/ before the script starts, named without sizes, as
//                                 another delivery agent leaves it (seeded messages are
//   body                          numbered in the order written), not for a literal
//   .
//   message cut noeol             `noeol`: the last line has no line end
//   a- APPEND INBOX {plain}       session "a" runs it; responses not compared
//   a> SELECT INBOX               session "a" runs it; responses compared
//   b> STATUS INBOX (MESSAGES)    session "b", a second connection of the same user
//   rfc> * 1 FETCH (...)          where RFC and Dovecot differ: what Mailyard must answer
//   rfc> OK                       instead (normalised form, untagged lines then tagged);
//                                 say why in a comment above
//
// `{name}` in a command is the named message, sent as a synchronising literal (`~{name}`
// as a literal8, RFC 3516; `{name+}` as a non-synchronising one, RFC 7888). IDLE is ended
// with DONE as soon as the server idles. Each session logs in first (not compared) and
// the script runs in the order written. `<uidvalidity-1>` or `<modseq-3>` in a command is
// the number a compared answer before it gave that name, as each server chose it.

export interface Step {
  session: string;
  command: string;
  compare: boolean;
  /** What Mailyard must answer where the RFC and Dovecot differ. */
  rfc: string[] | null;
  line: number;
}

export interface Script {
  name: string;
  messages: Map<string, Buffer>;
  /** The `seeded` messages, in order. */
  seeded: Buffer[];
  steps: Step[];
}

export function parseScript(name: string, text: string): Script {
  const messages = new Map<string, Buffer>();
  const seeded: Buffer[] = [];
  const steps: Step[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, '');
    if (!line.trim() || line.startsWith('#')) continue;
    const msg = /^message (\S+)((?: (?:lf|seeded|noeol))*)$/.exec(line);
    if (msg) {
      const body: string[] = [];
      for (i++; i < lines.length && lines[i] !== '.'; i++) body.push(lines[i]!.replace(/^\.\./, '.'));
      if (i >= lines.length) throw new Error(`${name}:${i}: message ${msg[1]} has no closing "."`);
      const eol = msg[2]!.includes('lf') ? '\n' : '\r\n';
      let text = body.map((l) => l + eol).join('');
      if (msg[2]!.includes('noeol')) text = text.slice(0, -eol.length);
      const data = Buffer.from(text, 'utf8');
      if (msg[2]!.includes('seeded')) seeded.push(data);
      else messages.set(msg[1]!, data);
      continue;
    }
    const rfc = /^rfc> (.*)$/.exec(line);
    if (rfc) {
      const last = steps[steps.length - 1];
      if (!last?.compare) throw new Error(`${name}:${i + 1}: rfc> must follow a compared command`);
      (last.rfc ??= []).push(rfc[1]!);
      continue;
    }
    const step = /^([a-z])([>-]) (.+)$/.exec(line);
    if (!step) throw new Error(`${name}:${i + 1}: cannot read ${JSON.stringify(line)}`);
    for (const ref of step[3]!.matchAll(/\{([a-z][\w-]*)\+?\}/g))
      if (!messages.has(ref[1]!)) throw new Error(`${name}:${i + 1}: no message ${ref[1]}`);
    steps.push({ session: step[1]!, command: step[3]!, compare: step[2] === '>', rfc: null, line: i + 1 });
  }
  return { name, messages, seeded, steps };
}
