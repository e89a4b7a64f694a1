import { isIP } from 'node:net';
import { CHECKS, RestrictionError, checkUsage, type CheckDefinition, type CheckName } from './checks.js';
import {
  LIST_STAGE,
  RESTRICTION_LISTS,
  isRestrictionList,
  misplacement,
  parseRestriction,
} from './restrictions.js';
import type { PolicyRules, TableKind } from './store.js';

/**
 * What `mailyard policy ...` does, as functions returning the lines to print, so the
 * CLI stays a thin command table and these are tested without a process. Errors are
 * thrown (RestrictionError, AccessError) with one sentence naming what was wrong.
 */

/** An operator mistake the CLI reports in one sentence (nothing recorded, etc.). */
export class PolicyCommandError extends Error {
  override readonly name = 'PolicyCommandError';
}

/** Postfix writes lists with commas: "permit_mynetworks, reject_rbl_client zen.example". */
export function splitEntries(words: string[]): string[] {
  return words
    .join(' ')
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean);
}

/** The lists, one entry a line; an entry that can decide nothing where it is says so. */
export async function showLists(rules: PolicyRules, list?: string): Promise<string[]> {
  const names = list ? [list] : [...RESTRICTION_LISTS];
  const out: string[] = [];
  for (const n of names) {
    const entries = await rules.list(n);
    out.push(`${n} =${entries.length ? '' : ' (empty)'}`);
    for (const e of entries) out.push(`    ${e}${isRestrictionList(n) ? inertNote(n, e) : ''}`);
  }
  return out;
}

function inertNote(list: (typeof RESTRICTION_LISTS)[number], entry: string): string {
  try {
    return misplacement(list, parseRestriction(entry))
      ? `    (can decide nothing at the ${LIST_STAGE[list]} stage)`
      : '';
  } catch (err) {
    if (err instanceof RestrictionError) return `    (refused by the policy service: ${err.message})`;
    throw err;
  }
}

export async function setList(rules: PolicyRules, list: string, words: string[]): Promise<string[]> {
  const entries = await rules.set(list, splitEntries(words));
  return [`${list} = ${entries.join(', ') || '(empty)'}`];
}

export async function addEntry(
  rules: PolicyRules,
  list: string,
  words: string[],
  position?: number,
): Promise<string[]> {
  const entries = await rules.add(list, words.join(' '), position);
  return [`${list} = ${entries.join(', ')}`];
}

export async function removeEntry(rules: PolicyRules, list: string, words: string[]): Promise<string[]> {
  const entries = await rules.remove(list, words.join(' '));
  return [`${list} = ${entries.join(', ') || '(empty)'}`];
}

export async function resetList(rules: PolicyRules, list: string): Promise<string[]> {
  const entries = await rules.reset(list);
  return [`${list} = ${entries.join(', ')} (default)`];
}

/** The table of checks: how each is written, where it can stand, what it does. */
export function listChecks(): string[] {
  const names = Object.keys(CHECKS) as CheckName[];
  const width = Math.max(...names.map((n) => checkUsage(n).length));
  return names.map((n) => {
    const c: CheckDefinition = CHECKS[n];
    const stages = c.stages.length === 4 ? 'any stage' : c.stages.join(', ');
    return `${checkUsage(n).padEnd(width)}  ${c.help} [${stages}]`;
  });
}

/** Client tables hold IPs and networks; the key says which kind of table it is. */
export function tableKind(key: string): TableKind {
  return isIP(key.split('/')[0] ?? '') ? 'client' : 'address';
}

export async function accessSet(
  rules: PolicyRules,
  table: string,
  key: string,
  action: string[],
): Promise<string[]> {
  const k = await rules.accessSet(table, tableKind(key), key, action.join(' '));
  return [`${table}: ${k} ${action.join(' ')}`];
}

export async function accessDel(rules: PolicyRules, table: string, key: string): Promise<string[]> {
  const k = await rules.accessDel(table, tableKind(key), key);
  return [`${table}: ${k} removed`];
}

export async function accessList(rules: PolicyRules, table: string): Promise<string[]> {
  const entries = Object.entries(await rules.accessList(table)).sort(([a], [b]) => a.localeCompare(b));
  return entries.length ? entries.map(([k, v]) => `${k}\t${v}`) : [`${table}: (empty)`];
}

export async function userList(
  rules: PolicyRules,
  op: 'add' | 'del' | 'show',
  kind: 'allow' | 'block',
  account: string,
  sender?: string,
): Promise<string[]> {
  if (op === 'add' && sender) await rules.userListAdd(account, kind, sender);
  if (op === 'del' && sender) await rules.userListDel(account, kind, sender);
  const list = await rules.userList(account, kind);
  return [`${account} ${kind}: ${list.join(', ') || '(empty)'}`];
}

/** What `policy explain` says of an id it has nothing on. */
export const nothingRecorded = (id: string) =>
  new PolicyCommandError(`nothing recorded for ${id} (refusals are kept for EXPLAIN_TTL, 7 days by default)`);

export async function explain(rules: PolicyRules, id: string): Promise<string[]> {
  const rec = await rules.explain(id);
  if (!rec) throw nothingRecorded(id);
  const out = [
    `${rec.id}: ${rec.action} at ${rec.stage} stage, ${rec.at}`,
    `  client ${rec.client}${rec.sender !== null ? `, from <${rec.sender}>` : ''}${rec.recipient ? `, to <${rec.recipient}>` : ''}`,
  ];
  if (rec.reply) out.push(`  reply: ${rec.reply}`);
  out.push('  reasons:');
  for (const r of rec.reasons)
    out.push(
      `    ${r.check} = ${r.result}${r.score !== undefined ? ` (score ${r.score})` : ''}${r.detail ? `: ${r.detail}` : ''}`,
    );
  return out;
}
