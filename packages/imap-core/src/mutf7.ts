// Modified UTF-7 for mailbox names, RFC 3501 §5.1.3 (RFC 9051 keeps it for clients
// that have not enabled UTF8=ACCEPT).

/** UTF-8 mailbox name -> modified UTF-7. */
export function encodeMutf7(name: string): string {
  let out = '';
  let pending: number[] = [];
  const flush = () => {
    if (!pending.length) return;
    const bytes = Buffer.alloc(pending.length * 2);
    pending.forEach((u, i) => bytes.writeUInt16BE(u, i * 2));
    out += '&' + bytes.toString('base64').replace(/=+$/, '').replace(/\//g, ',') + '-';
    pending = [];
  };
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c >= 0x20 && c <= 0x7e) {
      flush();
      out += c === 0x26 ? '&-' : name[i];
    } else {
      pending.push(c);
    }
  }
  flush();
  return out;
}

/** Modified UTF-7 -> UTF-8; throws on malformed input (the caller answers NO). */
export function decodeMutf7(text: string): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    const c = ch.charCodeAt(0);
    if (c < 0x20 || c > 0x7e) throw new Error('mailbox name is not 7-bit');
    if (ch !== '&') {
      out += ch;
      continue;
    }
    const end = text.indexOf('-', i);
    if (end < 0) throw new Error('unterminated modified UTF-7 sequence');
    const b64 = text.slice(i + 1, end);
    i = end;
    if (!b64) {
      out += '&';
      continue;
    }
    if (!/^[A-Za-z0-9+,]+$/.test(b64)) throw new Error('bad modified UTF-7 sequence');
    const bytes = Buffer.from(b64.replace(/,/g, '/'), 'base64');
    if (bytes.length % 2) throw new Error('bad modified UTF-7 sequence');
    let chunk = '';
    for (let j = 0; j < bytes.length; j += 2) chunk += String.fromCharCode(bytes.readUInt16BE(j));
    // RFC 3501: printable US-ASCII must not be encoded
    if (/[\x20-\x7e]/.test(chunk)) throw new Error('modified UTF-7 encodes printable ASCII');
    if (encodeMutf7(chunk) !== '&' + b64 + '-') throw new Error('non-canonical modified UTF-7');
    out += chunk;
  }
  // one spelling a name (RFC 3501 §5.1.3 takes away UTF-7's alternate forms): two runs
  // side by side ("&AOQ-&AOQ-") are one ("&AOQA5A-"), else LIST shows another name
  if (encodeMutf7(out) !== text) throw new Error('non-canonical modified UTF-7');
  return out;
}
