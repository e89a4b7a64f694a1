// The CAPABILITY list (RFC 9051 §7.2.2), in one place: before login what it takes to log
// in, after it every extension the commands implement. An extension a command group
// adds is announced here.
import type { RetrievalConfig } from '../config.js';

export interface CapabilityFacts {
  loggedIn: boolean;
  /** TLS is on (STARTTLS done, or an implicit-TLS port). */
  secure: boolean;
  /** A password may be sent in the clear here (TLS, or a trusted network). */
  plaintextAllowed: boolean;
  compressed: boolean;
  config: Pick<RetrievalConfig, 'message_size_limit' | 'imap_compress'>;
}

export function capabilities(f: CapabilityFacts): string {
  const caps = ['IMAP4rev1', 'IMAP4rev2', 'SASL-IR', 'LITERAL+', 'ID', 'ENABLE', 'IDLE'];
  if (!f.loggedIn) {
    if (!f.secure) caps.push('STARTTLS');
    if (f.plaintextAllowed) caps.push('AUTH=PLAIN');
    else caps.push('LOGINDISABLED');
    return caps.join(' ');
  }
  caps.push(
    'NAMESPACE',
    'UIDPLUS',
    'MULTIAPPEND',
    'CATENATE',
    'MOVE',
    'UNSELECT',
    'CHILDREN',
    'SPECIAL-USE',
    'LIST-EXTENDED',
    'LIST-STATUS',
    'CONDSTORE',
    'QRESYNC',
    'QUOTA',
    'QUOTA=RES-STORAGE',
    'UTF8=ACCEPT',
    'ESEARCH',
    'SEARCHRES',
    'ESORT',
    'CONTEXT=SEARCH',
    'CONTEXT=SORT',
    'NOTIFY',
    'SORT',
    'SORT=DISPLAY',
    'THREAD=REFERENCES',
    'THREAD=REFS',
    'THREAD=ORDEREDSUBJECT',
    'STATUS=SIZE',
    'BINARY',
    `APPENDLIMIT=${f.config.message_size_limit}`,
  );
  if (f.config.imap_compress && !f.compressed) caps.push('COMPRESS=DEFLATE');
  return caps.join(' ');
}
