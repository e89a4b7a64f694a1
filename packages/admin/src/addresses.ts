import { accountAddress, type Directory, DirectoryError } from '@mailyard/directory';
import { normalizeDomain, parseMailAddress } from '@mailyard/smtp-core';

// The directory normalises and checks addresses itself when it writes; these helpers
// let the CLI do the same before it prompts for a password, and normalise the
// arguments of the operations the directory takes as given (alias del, alias list).

/** `local@domain` lower-cased with the domain in ASCII, or an invalid_address error. */
export function normalizeAddress(address: string): string {
  const a = accountAddress(address);
  if (!a) throw new DirectoryError('invalid_address', `"${address}" is not a valid address`);
  return a;
}

/** An alias target: any valid address, local or external, as the directory stores it. */
export function normalizeTarget(address: string): string {
  const p = parseMailAddress(address);
  if (!p.ok) throw new DirectoryError('invalid_address', `"${address}" is not a valid address`);
  return p.value.address.toLowerCase();
}

/** An alias source: an address, or `@domain` for the domain's catch-all. */
export function normalizeAliasSource(source: string): string {
  if (!source.startsWith('@')) return normalizeAddress(source);
  const d = normalizeDomain(source.slice(1));
  if (!d) throw new DirectoryError('invalid_address', `"${source}" is not a valid catch-all (use @domain)`);
  return `@${d}`;
}

export function normalizeDomainArg(domain: string): string {
  const d = normalizeDomain(domain);
  if (!d) throw new DirectoryError('invalid_address', `"${domain}" is not a valid domain name`);
  return d;
}

export async function requireLocalDomain(directory: Directory, domain: string): Promise<string> {
  const d = normalizeDomainArg(domain);
  if (!(await directory.isLocalDomain(d)))
    throw new DirectoryError(
      'unknown_domain',
      `domain ${d} is not a local domain (add it with: mailyard domain add ${d})`,
    );
  return d;
}

/** Checks that an account can be created (`absent`) or changed (`present`); returns its normalised address. */
export async function checkAccount(
  directory: Directory,
  address: string,
  want: 'absent' | 'present',
): Promise<string> {
  const a = normalizeAddress(address);
  await requireLocalDomain(directory, a.slice(a.lastIndexOf('@') + 1));
  const exists = await directory.accountExists(a);
  if (want === 'absent' && exists) throw new DirectoryError('duplicate', `account ${a} already exists`);
  if (want === 'present' && !exists) throw new DirectoryError('not_found', `account ${a} does not exist`);
  return a;
}
