// Turns a server's reply into what two servers can be compared on: the reply code and the
// enhanced status code (RFC 3463), never the text. An EHLO reply becomes its code and the
// extension keywords both servers should have (without their arguments: SIZE's value is
// each server's limit); the others are left out, each for the reason given below.

/**
 * EHLO keywords compared. Left out: VRFY (Postfix names it, RFC 5321 §4.1.1.6 does not
 * ask for it, and both answer VRFY), ETRN (RFC 1985, a queue flush for dial-up secondaries:
 * we keep no queue to flush), DSN (RFC 3461: not offered by us, our bounces are sent by
 * delivery and outbound-relay whatever NOTIFY says), CHUNKING (RFC 3030: smtp-server has
 * no BDAT), AUTH and XCLIENT/XFORWARD (not on port 25).
 */
const COMPARED_KEYWORDS = new Set([
  'PIPELINING',
  'SIZE',
  'STARTTLS',
  'ENHANCEDSTATUSCODES',
  '8BITMIME',
  'SMTPUTF8',
]);

/** One reply's lines (`250-...`, `250 ...`) in their compared form. */
export function normaliseReply(lines: string[], ehlo: boolean): string {
  const last = lines[lines.length - 1]!;
  const code = last.slice(0, 3);
  if (ehlo && lines.length > 1) {
    const keywords = lines
      .slice(1)
      .map((l) => l.slice(4).split(' ')[0]!.toUpperCase())
      .filter((k) => COMPARED_KEYWORDS.has(k))
      .sort();
    return [code, ...keywords].join(' ');
  }
  const enhanced = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})(?: |$)/.exec(last)?.[1];
  return enhanced ? `${code} ${enhanced}` : code;
}
