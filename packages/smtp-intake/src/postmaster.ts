import type { Directory } from '@mailyard/directory';

/**
 * The address `RCPT TO:<postmaster>` stands for (RFC 5321 §4.5.1): postmaster of the local
 * domain myhostname is in (Postfix: $myorigin), else of the first local domain. Shared by
 * every listener, so port 25 and the submission ports deliver it to the same mailbox.
 */
export async function localPostmaster(directory: Directory, myhostname: string): Promise<string> {
  const host = myhostname.toLowerCase();
  const domains = await directory.listDomains();
  const own = domains
    .filter((d) => host === d || host.endsWith(`.${d}`))
    .sort((a, b) => b.length - a.length)[0];
  return `postmaster@${own ?? domains[0] ?? host}`;
}
