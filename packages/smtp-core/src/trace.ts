/** RFC 5322 §3.3 date-time, e.g. "Fri, 27 Nov 2026 20:04:52 +0000". */
export function rfc5322Date(d = new Date()): string {
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p = (n: number) => String(n).padStart(2, '0');
  return `${days[d.getUTCDay()]}, ${p(d.getUTCDate())} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(
    d.getUTCMinutes(),
  )}:${p(d.getUTCSeconds())} +0000`;
}

/** Client-controlled text for a header comment: no control characters, no unbalanced parentheses. */
function clean(text: string, max = 255): string {
  return text
    .replace(/[\x00-\x1f\x7f]/g, '')
    .replace(/[()\\]/g, '')
    .slice(0, max);
}

export interface ReceivedInfo {
  helo: string;
  /** Reverse name of the client; null when it has none. Omitted entirely when `hideClient`. */
  clientHostname: string | null;
  clientIp: string;
  myhostname: string;
  queueId: string;
  tls: { protocol: string; cipher: string } | null;
  authenticated: boolean;
  smtputf8: boolean;
  /** The recipient, when the message has exactly one (RFC 5321 §4.4 "for" clause). */
  recipient: string | null;
  /** Submission privacy: name neither the client IP nor its host name. */
  hideClient?: boolean;
  date?: Date;
}

/**
 * The RFC 5321 §4.4 trace header, with the protocol keyword of RFC 3848 / RFC 6531
 * (ESMTP, ESMTPS, ESMTPSA, UTF8SMTPS...). Folded so no line exceeds 78 characters
 * in the common case.
 */
export function receivedHeader(info: ReceivedInfo): string {
  const proto = `${info.smtputf8 ? 'UTF8SMTP' : 'ESMTP'}${info.tls ? 'S' : ''}${info.authenticated ? 'A' : ''}`;
  const ip = info.clientIp.replace(/^::ffff:/i, '');
  const literal = ip.includes(':') ? `IPv6:${ip}` : ip;
  const from = info.hideClient
    ? `from ${clean(info.helo) || 'unknown'}`
    : `from ${clean(info.helo) || 'unknown'} (${info.clientHostname ? clean(info.clientHostname) : 'unknown'} [${literal}])`;
  const lines = [`Received: ${from}`];
  if (info.tls) lines.push(`\t(using ${clean(info.tls.protocol)} with cipher ${clean(info.tls.cipher)})`);
  lines.push(`\tby ${info.myhostname} (Mailyard) with ${proto} id ${info.queueId}`);
  const date = rfc5322Date(info.date);
  lines.push(info.recipient ? `\tfor <${clean(info.recipient, 320)}>; ${date}` : `\t; ${date}`);
  return lines.join('\r\n') + '\r\n';
}

/** RFC 5321 §4.4: the final delivery records the reverse-path. */
export function returnPathHeader(mailFrom: string): string {
  return `Return-Path: <${mailFrom.replace(/[\r\n<>]/g, '')}>\r\n`;
}

/** Postfix/Dovecot's Delivered-To: the address this copy was delivered to (loop detection). */
export function deliveredToHeader(address: string): string {
  return `Delivered-To: ${address.replace(/[\r\n]/g, '')}\r\n`;
}
