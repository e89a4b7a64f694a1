/**
 * The extensions a client turned on: by ENABLE (RFC 5161), or CONDSTORE by the first
 * command that uses it (RFC 7162 §3.1). Names are kept upper case.
 */
export class EnabledExtensions {
  private readonly names = new Set<string>();

  has(name: string): boolean {
    return this.names.has(name);
  }

  /** Turns an extension on; true when it was off. */
  add(name: string): boolean {
    if (this.names.has(name)) return false;
    this.names.add(name);
    return true;
  }

  /** RFC 6855: mailbox names and quoted strings in UTF-8 rather than modified UTF-7. */
  get utf8(): boolean {
    return this.names.has('UTF8=ACCEPT');
  }

  /** RFC 7162: MODSEQ in untagged FETCH; QRESYNC implies it. */
  get condstore(): boolean {
    return this.names.has('CONDSTORE') || this.names.has('QRESYNC');
  }

  /** RFC 7162 §3.2: VANISHED instead of EXPUNGE, the [CLOSED] response. */
  get qresync(): boolean {
    return this.names.has('QRESYNC');
  }

  /** RFC 9051: ESEARCH answers, no RECENT, LIST in SELECT. */
  get rev2(): boolean {
    return this.names.has('IMAP4REV2');
  }
}
