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

/**
 * The titlecased canonicalised form of RFC 5051 §2: each character to its simple
 * titlecase (UnicodeData.txt; a character whose case mapping is a string, as "ß", stays
 * itself), then its decomposition, compatibility ones included ("ﬁ" reads "fi"). Hangul
 * syllables are left whole, as the RFC says.
 */
export function casemap(s: string): string {
  let out = '';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (cp < 0x80) {
      out += cp >= 0x61 && cp <= 0x7a ? String.fromCharCode(cp - 32) : ch;
      continue;
    }
    if (cp >= 0xac00 && cp <= 0xd7a3) {
      out += ch;
      continue;
    }
    const mapped = TITLECASE[cp];
    let t = mapped !== undefined ? String.fromCodePoint(mapped) : ch.toUpperCase();
    if ([...t].length !== 1) t = ch;
    out += t.normalize('NFKD');
  }
  return out;
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
