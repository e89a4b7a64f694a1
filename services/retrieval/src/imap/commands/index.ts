// The IMAP command table (RFC 9051 §6 and extensions), built from the command groups.
// A new command goes into the group it belongs to; a new group is one more line here.
import { authCommands } from './auth.js';
import type { Command, CommandGroup } from './command.js';
import { extensionCommands } from './extensions.js';
import { mailboxCommands } from './mailbox.js';
import { messageCommands } from './message.js';
import { notifyCommands } from './notify.js';
import { searchCommands } from './search.js';

export type { Command } from './command.js';

/** Joins the groups; a name defined twice is a mistake caught at start-up. */
export function commandTable(...groups: CommandGroup[]): ReadonlyMap<string, Command> {
  const table = new Map<string, Command>();
  for (const group of groups) {
    for (const [name, cmd] of Object.entries(group)) {
      if (table.has(name)) throw new Error(`IMAP command ${name} is defined twice`);
      table.set(name, cmd);
    }
  }
  return table;
}

export const COMMANDS = commandTable(
  authCommands,
  mailboxCommands,
  messageCommands,
  searchCommands,
  extensionCommands,
  notifyCommands,
);
