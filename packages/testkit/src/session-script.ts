// What the differential tests' session scripts share (mta-inbound's smtp-diff, retrieval's
// pop3-diff): how a script line stands for bytes, and how two servers' answers are told apart.

/**
 * The bytes a script line stands for: `\r`, `\n`, `\t`, `\0`, `\\` and `\xHH` for those
 * bytes, `{N*text}` for text written N times (nested: `{25*{1000*x}\r\n}` is 25 lines of
 * 1000 x's), `{base64:text}` for the base64 of text's bytes (a SASL response:
 * `{base64:\0user\0password}`), a final `\c` for no CRLF after the line; CRLF is added
 * otherwise.
 */
export function scriptBytes(text: string): Buffer {
  let expanded = text;
  // innermost first
  for (let prev = ''; prev !== expanded;) {
    prev = expanded;
    expanded = expanded
      .replace(/\{(\d+)\*([^{}]*)\}/g, (_, n: string, s: string) => s.repeat(Number(n)))
      .replace(/\{base64:([^{}]*)\}/g, (_, s: string) => scriptBytes(`${s}\\c`).toString('base64'));
  }
  const bytes: number[] = [];
  const put = (s: string) => bytes.push(...Buffer.from(s, 'utf8'));
  let crlf = true;
  for (let i = 0; i < expanded.length; i++) {
    const c = expanded[i]!;
    if (c !== '\\') {
      put(c);
      continue;
    }
    const e = expanded[++i];
    if (e === 'x') {
      bytes.push(parseInt(expanded.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (e === 'c' && i === expanded.length - 1) crlf = false;
    else if (e === 'r' || e === 'n' || e === 't' || e === '0' || e === '\\')
      bytes.push({ r: 13, n: 10, t: 9, '0': 0, '\\': 92 }[e]);
    else throw new Error(`unknown escape \\${e ?? ''} in ${text}`);
  }
  if (crlf) bytes.push(13, 10);
  return Buffer.from(bytes);
}

/** A step of a script as the comparison needs it. */
export interface ComparedStep {
  session: string;
  text: string;
  line: number;
  compare: boolean;
  /** What we must answer instead of the reference server, where that departs from the RFC. */
  rfc: string[] | null;
}

/**
 * Reads an `rfc>` line (what we must answer instead of the reference server) into the
 * step before it; false when the line is not one. `where` is `script:line`, for errors.
 */
export function rfcLine(steps: ComparedStep[], line: string, where: string): boolean {
  const rfc = /^rfc> (.*)$/.exec(line);
  if (!rfc) return false;
  const last = steps[steps.length - 1];
  if (!last?.compare) throw new Error(`${where}: rfc> must follow a compared step`);
  (last.rfc ??= []).push(rfc[1]!);
  return true;
}

/**
 * The steps whose answers differ, described for a failure message. `theirs` and `ours`
 * hold the answers of each session's greeting (before its first step) and of each
 * compared step, in script order; `reference` names the other server.
 */
export function scriptDifferences(
  steps: ComparedStep[],
  theirs: string[][],
  ours: string[][],
  reference: string,
): string[] {
  const labels: { what: string; rfc: string[] | null }[] = [];
  const opened = new Set<string>();
  for (const s of steps) {
    if (!opened.has(s.session)) {
      opened.add(s.session);
      labels.push({ what: `greeting of ${s.session}`, rfc: null });
    }
    if (s.compare) labels.push({ what: `line ${s.line}: ${s.session}> ${s.text}`, rfc: s.rfc });
  }
  const diffs: string[] = [];
  labels.forEach(({ what, rfc }, i) => {
    const want = rfc ?? theirs[i]!;
    const got = ours[i]!;
    if (JSON.stringify(want) === JSON.stringify(got)) return;
    diffs.push(
      [
        what.length > 160 ? `${what.slice(0, 160)}...` : what,
        ...want.map((l) => `  ${rfc ? 'rfc' : reference}:  ${l}`),
        ...got.map((l) => `  mailyard: ${l}`),
      ].join('\n'),
    );
  });
  return diffs;
}
