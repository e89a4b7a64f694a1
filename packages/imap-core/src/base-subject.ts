// Base subject extraction, RFC 5256 §2.1: what SORT SUBJECT and THREAD compare.
import { casemap } from './collation.js';
import { decodeWords } from './mime.js';

export interface ExtractedSubject {
  /** The base subject in i;unicode-casemap form (RFC 5256 §2.1 compares subjects by it). */
  base: string;
  /**
   * The extraction removed a subj-refwd ("Re:", "Fwd:"), a "(fwd)" trailer or a
   * "[fwd: ...]" wrapper: RFC 5256 §3 treats such a message as a reply or forward when
   * THREAD=REFERENCES groups threads by subject.
   */
  isReply: boolean;
}

// subj-blob = "[" *BLOBCHAR "]" *WSP, where BLOBCHAR is any CHAR but "[" and "]".
// After step (1) the only WSP left is a single space.
const BLOB = String.raw`\[[^[\]]*\] ?`;
// subj-leader = (*subj-blob subj-refwd) / WSP
// subj-refwd  = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
const REFWD = new RegExp(String.raw`^(?:${BLOB})*(?:re|fwd?) ?(?:${BLOB})?:`, 'i');
const LEADING_BLOB = new RegExp(`^${BLOB}`);
// subj-trailer = "(fwd)" / WSP
const FWD_TRAILER = /\(fwd\)$/i;

/**
 * RFC 5256 §2.1, steps (1) to (7), exactly as written (the RFC requires every server
 * and disconnected client to use the same algorithm). Localised prefixes such as "AW:"
 * or "SV:" are not in the grammar and so are kept.
 */
export function extractSubject(raw: string): ExtractedSubject {
  let isReply = false;
  // (1) encoded words to UTF-8; tabs and continuations to a space; runs of spaces to one
  let s = decodeWords(raw)
    .replace(/\r?\n/g, '')
    .replace(/[ \t]+/g, ' ');
  for (;;) {
    // (2) remove subj-trailer text until none is left
    for (;;) {
      if (s.endsWith(' ')) s = s.slice(0, -1);
      else if (FWD_TRAILER.test(s)) {
        s = s.slice(0, -5);
        isReply = true;
      } else break;
    }
    // (3)-(5) remove subj-leader, then a subj-blob that does not leave the subject empty
    for (let changed = true; changed;) {
      changed = false;
      if (s.startsWith(' ')) {
        s = s.slice(1);
        changed = true;
      }
      const leader = REFWD.exec(s);
      if (leader) {
        s = s.slice(leader[0].length);
        isReply = true;
        changed = true;
        continue;
      }
      const blob = LEADING_BLOB.exec(s);
      if (blob && blob[0].length < s.length) {
        s = s.slice(blob[0].length);
        changed = true;
      }
    }
    // (6) "[fwd: subject]": unwrap and start again from (2)
    if (s.length >= 6 && s.slice(0, 5).toLowerCase() === '[fwd:' && s.endsWith(']')) {
      s = s.slice(5, -1);
      isReply = true;
      continue;
    }
    // (7)
    return { base: casemap(s), isReply };
  }
}

/** The base subject alone (SORT SUBJECT). */
export function baseSubject(raw: string): string {
  return extractSubject(raw).base;
}
