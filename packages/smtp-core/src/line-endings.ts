const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;

export interface LineEndingReport {
  /** Some line ends in a bare LF or bare CR (not CRLF). */
  bare: boolean;
  /**
   * A "." alone on a line where at least one of the surrounding line breaks is a bare
   * CR or LF: a weaker parser downstream could take it as end of data (SMTP smuggling).
   */
  smuggling: boolean;
}

type Break = 'crlf' | 'bare' | 'none';

function breakBefore(buf: Buffer, i: number): Break {
  if (i === 0) return 'crlf'; // DATA content starts right after the CRLF of the DATA command
  const p = buf[i - 1];
  if (p === LF) return i >= 2 && buf[i - 2] === CR ? 'crlf' : 'bare';
  if (p === CR) return 'bare';
  return 'none';
}

function breakAfter(buf: Buffer, i: number): Break {
  const n = buf[i + 1];
  if (n === CR) return buf[i + 2] === LF ? 'crlf' : 'bare';
  if (n === LF) return 'bare';
  return 'none';
}

/** RFC 5321 §2.3.8: lines end in CRLF; finds bare CR/LF and the smuggling pattern. */
export function inspectLineEndings(buf: Buffer): LineEndingReport {
  let bare = false;
  for (let i = buf.indexOf(LF); i !== -1; i = buf.indexOf(LF, i + 1)) {
    if (i === 0 || buf[i - 1] !== CR) {
      bare = true;
      break;
    }
  }
  if (!bare) {
    for (let i = buf.indexOf(CR); i !== -1; i = buf.indexOf(CR, i + 1)) {
      if (buf[i + 1] !== LF) {
        bare = true;
        break;
      }
    }
  }
  if (!bare) return { bare: false, smuggling: false };
  let smuggling = false;
  for (let i = buf.indexOf(DOT); i !== -1; i = buf.indexOf(DOT, i + 1)) {
    const before = breakBefore(buf, i);
    if (before === 'none') continue;
    const after = breakAfter(buf, i);
    if (after === 'none') continue;
    if (before === 'bare' || after === 'bare') {
      smuggling = true;
      break;
    }
  }
  return { bare, smuggling };
}

/** Rewrites every bare LF and bare CR as CRLF (Postfix: smtpd_forbid_bare_newline = normalize). */
export function normalizeLineEndings(buf: Buffer): Buffer {
  const chunks: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < buf.length; i++) {
    const c = buf[i];
    if (c === CR) {
      if (buf[i + 1] === LF) {
        i++;
        continue;
      }
      chunks.push(buf.subarray(start, i), Buffer.from('\r\n'));
      start = i + 1;
    } else if (c === LF) {
      chunks.push(buf.subarray(start, i), Buffer.from('\r\n'));
      start = i + 1;
    }
  }
  if (start === 0) return buf;
  chunks.push(buf.subarray(start));
  return Buffer.concat(chunks);
}
