import type { Command } from 'commander';
import type { CommandContext } from '../context.js';
import { registerAliasCommands } from './alias.js';
import { registerAppPasswordCommands } from './app-password.js';
import { registerAuditCommands } from './audit.js';
import { registerBackupCommands } from './backup.js';
import { registerDkimCommands } from './dkim.js';
import { registerDnsCommands } from './dns.js';
import { registerDomainCommands } from './domain.js';
import { registerPolicyCommands } from './policy.js';
import { registerQueueGroup } from './queue.js';
import { registerSetupCommand } from './setup.js';
import { registerUserCommands } from './user.js';

/** Adds one command group (`mailyard <group> <verb>`) to the program. */
export type CommandGroup = (program: Command, ctx: CommandContext) => void;

/**
 * Every command group, in the order `mailyard --help` lists them. A new group
 * (dkim, queue, policy...) is one file in this directory and one line here.
 */
export const commandGroups: readonly CommandGroup[] = [
  registerDomainCommands,
  registerUserCommands,
  registerAliasCommands,
  registerAppPasswordCommands,
  registerDkimCommands,
  registerDnsCommands,
  registerPolicyCommands,
  registerQueueGroup,
  registerAuditCommands,
  registerBackupCommands,
  registerSetupCommand,
];
