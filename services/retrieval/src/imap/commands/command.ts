// What a command is: the states it is allowed in, how its arguments are read (before it
// runs), and what it does. The session checks the state, parses, then runs; handlers
// throw ImapReply for NO/BAD, rendered in one place by the session.
import type { ArgReader } from '@mailyard/imap-core';
import type { AuthedContext, ImapContext, ImapState, SelectedContext } from '../context.js';

export const ANY = ['not-authenticated', 'authenticated', 'selected'] as const;
export const NOAUTH = ['not-authenticated'] as const;
export const AUTHED = ['authenticated', 'selected'] as const;
export const SELECTED = ['selected'] as const;

/** The context a command allowed in the states S is given: the narrowest all of them hold. */
export type ContextIn<S extends ImapState> = 'not-authenticated' extends S
  ? ImapContext
  : 'authenticated' extends S
    ? AuthedContext
    : SelectedContext;

export interface CommandDef<A, S extends ImapState> {
  states: readonly S[];
  /**
   * The client's next bytes are read another way once it ran (IDLE's DONE, a SASL
   * response, TLS, deflate): nothing pipelined after it is framed before.
   */
  takesInput?: boolean;
  parse(r: ArgReader, s: ImapContext): A;
  /**
   * Runs when the command announces a synchronising literal, before the client is asked
   * for it, with the arguments complete so far and the literal's size: throwing an
   * ImapReply answers the command there (RFC 9051 §7.5), and the client sends none of it.
   */
  beforeLiteral?(s: ContextIn<S>, r: ArgReader, size: number): Promise<void>;
  /** `name` is the command as the client named it (FETCH or UID FETCH, COPY or MOVE...). */
  run(s: ContextIn<S>, tag: string, args: A, name: string): Promise<void>;
}

/** A command as the table holds it, its argument type forgotten. */
export interface Command {
  states: readonly ImapState[];
  takesInput?: boolean;
  parse(r: ArgReader, s: ImapContext): unknown;
  beforeLiteral?(s: ImapContext, r: ArgReader, size: number): Promise<void>;
  run(s: ImapContext, tag: string, args: unknown, name: string): Promise<void>;
}

export type CommandGroup = Readonly<Record<string, Command>>;

/** A command under its own name and as `UID <name>` (RFC 9051 §6.4.9); run tells them apart by name. */
export function withUid(name: string, cmd: Command): CommandGroup {
  return { [name]: cmd, [`UID ${name}`]: cmd };
}

/**
 * Types a command by its states, and files it in a table. The session runs a command
 * only in one of its states, where the context holds what ContextIn<S> says (a user once
 * logged in, a view once selected), and hands run what parse returned.
 */
export function command<A, S extends ImapState>(d: CommandDef<A, S>): Command {
  return d;
}
