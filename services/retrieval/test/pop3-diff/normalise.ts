// Turns a server's response to one POP3 command into lines two servers can be compared
// on: the status (+OK, -ERR, or "+" for a SASL continuation) and any RFC 2449 response
// code, never the human text after them; the numbers a command answers with (STAT, LIST);
// message content line for line (RETR, TOP: both servers send the same stored messages);
// UIDL values, which each server makes up, named in order of appearance (see Uidls);
// CAPA as the sorted capabilities compared (see CAPABILITIES).

/**
 * CAPA lines compared: the keyword, with its arguments where both servers must agree.
 * Left out: IMPLEMENTATION (free text naming the server, RFC 2449 §6.9) and LOGIN-DELAY
 * and EXPIRE, policies of the server's own (Dovecot announces none by default, nor do we).
 */
const CAPABILITIES = new Set([
  'TOP',
  'USER',
  'SASL',
  'RESP-CODES',
  'AUTH-RESP-CODE',
  'PIPELINING',
  'UIDL',
  'STLS',
  'UTF8',
  'LANG',
]);

/** RFC 1939 §7: a unique-id is 1 to 70 characters in the range 0x21 to 0x7E. */
const UNIQUE_ID = /^[\x21-\x7e]{1,70}$/;

/**
 * UIDL values in order of first appearance: `<uid-1>`, `<uid-2>`... The same message
 * keeps its name in every session of a script, and two messages with one value share it,
 * so a server whose values are not unique or not stable shows in the names.
 */
export class Uidls {
  private seen = new Map<string, string>();
  name(v: string): string {
    if (!UNIQUE_ID.test(v)) return `<not a unique-id: ${JSON.stringify(v)}>`;
    let n = this.seen.get(v);
    if (!n) this.seen.set(v, (n = `<uid-${this.seen.size + 1}>`));
    return n;
  }
}

/** How a command's successful response ends: one line, or lines up to ".". */
export function multiLine(command: string): boolean {
  const [verb = '', ...args] = command.split(' ').filter(Boolean);
  switch (verb.toUpperCase()) {
    case 'CAPA':
    case 'RETR':
    case 'TOP':
      return true;
    case 'LIST':
    case 'UIDL':
    // AUTH alone: Dovecot lists its mechanisms, as before CAPA existed
    case 'AUTH':
      return args.length === 0;
    default:
      return false;
  }
}

/** `+OK [CODE] text` → `+OK [CODE]`; a continuation (`+ ...`) → `+`. */
function status(line: string): string {
  const m = /^(\+OK|-ERR)(?: (\[[^\]]*\]))?/i.exec(line);
  if (!m) return line.startsWith('+ ') || line === '+' ? '+' : `<not a status: ${JSON.stringify(line)}>`;
  return m[2] ? `${m[1]!.toUpperCase()} ${m[2]}` : m[1]!.toUpperCase();
}

/** One response (its lines, the terminating "." included) in compared form. */
export function normaliseResponse(command: string, lines: string[], uidls: Uidls): string[] {
  const [first = '', ...rest] = lines;
  const head = status(first);
  if (head !== '+OK') return [head, ...rest];
  const [verb = '', ...args] = command.split(' ').filter(Boolean);
  const word = verb.toUpperCase();
  const words = first.split(' ');
  if (word === 'STAT' || (word === 'LIST' && args.length)) return [words.slice(0, 3).join(' '), ...rest];
  if (word === 'UIDL' && args.length) return [`+OK ${words[1]} ${uidls.name(words[2] ?? '')}`, ...rest];
  if (word === 'UIDL')
    return [
      head,
      ...rest.map((l) => {
        if (l === '.') return l;
        const [n, v] = l.split(' ');
        return `${n} ${uidls.name(v ?? '')}`;
      }),
    ];
  if (word === 'CAPA')
    return [
      head,
      ...rest
        .filter((l) => l !== '.' && CAPABILITIES.has(l.split(' ')[0]!.toUpperCase()))
        .map((l) => {
          const [k, ...a] = l.split(' ');
          return [k!.toUpperCase(), ...a.map((x) => x.toUpperCase()).sort()].join(' ');
        })
        .sort(),
      ...rest.filter((l) => l === '.'),
    ];
  return [head, ...rest];
}
