// The i;unicode-casemap collation (RFC 5051), which SORT and THREAD compare strings by
// (RFC 5256 §2.1, RFC 5957 §4): titlecase, then decompose, then compare octets.

/**
 * Simple titlecase where it differs from the simple uppercase: the Latin digraphs, each
 * of the three forms (ǆ, ǅ, Ǆ) to the titlecase one.
 */
const TITLECASE: Record<number, number> = {
  0x01c4: 0x01c5,
  0x01c5: 0x01c5,
  0x01c6: 0x01c5,
  0x01c7: 0x01c8,
  0x01c8: 0x01c8,
  0x01c9: 0x01c8,
  0x01ca: 0x01cb,
  0x01cb: 0x01cb,
  0x01cc: 0x01cb,
  0x01f1: 0x01f2,
  0x01f2: 0x01f2,
  0x01f3: 0x01f2,
};

function mapChar(ch: string): string {
  const cp = ch.codePointAt(0)!;
  if (cp >= 0xac00 && cp <= 0xd7a3) return ch;
  const mapped = TITLECASE[cp];
  let t = mapped !== undefined ? String.fromCodePoint(mapped) : ch.toUpperCase();
  if ([...t].length !== 1) t = ch;
  return t.normalize('NFKD');
}

/** The characters TITLECASE maps. */
const DIGRAPHS = /[\u01c4-\u01cc\u01f1-\u01f3]/;

/** Characters and short runs mapped as they are first met: text repeats few of them. */
const shortRuns = new Map<string, string>();
const SHORT_RUN = 8;
const SHORT_RUNS_KEPT = 20_000;

/**
 * A run of non-ASCII characters mapped. Most long runs (CJK text, say) have no case and
 * no decomposition: one look at the whole run says so; others are mapped one by one.
 */
function mapRun(run: string): string {
  const short = run.length <= SHORT_RUN;
  const hit = short ? shortRuns.get(run) : undefined;
  if (hit !== undefined) return hit;
  let out = run;
  if (DIGRAPHS.test(run) || run.toUpperCase() !== run || run.normalize('NFKD') !== run) {
    out = '';
    for (const ch of run) {
      let m = shortRuns.get(ch);
      if (m === undefined) {
        m = mapChar(ch);
        if (shortRuns.size < SHORT_RUNS_KEPT) shortRuns.set(ch, m);
      }
      out += m;
    }
  }
  if (short && shortRuns.size < SHORT_RUNS_KEPT) shortRuns.set(run, out);
  return out;
}

/**
 * The titlecased canonicalised form of RFC 5051 §2: each character to its simple
 * titlecase (UnicodeData.txt; a character whose case mapping is a string, as "ß", stays
 * itself), then its decomposition, compatibility ones included ("ﬁ" reads "fi"). Hangul
 * syllables are left whole, as the RFC says. SEARCH runs it over whole message bodies, so
 * ASCII, which most text is, is uppercased natively.
 */
export function casemap(s: string): string {
  const parts = s.split(/([^\x00-\x7f]+)/);
  for (let i = 0; i < parts.length; i++) parts[i] = i % 2 ? mapRun(parts[i]!) : parts[i]!.toUpperCase();
  return parts.join('');
}

/** Orders two casemapped strings as their UTF-8 octets do (code point order, not UTF-16's). */
export function compareOctets(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    // a surrogate stands for a code point above U+FFFF: above every BMP character
    const sx = x >= 0xd800 && x <= 0xdfff;
    const sy = y >= 0xd800 && y <= 0xdfff;
    if (sx !== sy) return sx ? 1 : -1;
    return x - y;
  }
  return a.length - b.length;
}
