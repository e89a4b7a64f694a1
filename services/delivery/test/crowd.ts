import type { Directory } from '@mailyard/directory';
import { addAccount } from '../../../test/harness.js';

/**
 * Two aliases around an ALIAS_EXPANSION_LIMIT of 10: `team@example.test` right at it
 * (8 accounts and 2 external addresses), `crowd@example.test` over it (the team counted
 * by its 10 members, 3 more external addresses and dora's account: 14).
 */
export const team = Array.from({ length: 8 }, (_, i) => `t${i}@example.test`);
export const teamRemote = ['zz-1@far-away.test', 'zz-2@far-away.test'];
// sorted before the team's external members: the run that expands the crowd at last must
// not skip them for the record of how far the team's were queued
export const crowdRemote = ['aa-1@far-away.test', 'aa-2@far-away.test', 'aa-3@far-away.test'];

/** The accounts (dora and the team) and both aliases. */
export async function addCrowd(directory: Directory): Promise<void> {
  for (const a of ['dora@example.test', ...team]) await addAccount(directory, a);
  await directory.addAlias('team@example.test', [...team, ...teamRemote]);
  await directory.addAlias('crowd@example.test', ['team@example.test', ...crowdRemote, 'dora@example.test']);
}
