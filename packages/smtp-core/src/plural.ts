/**
 * A count with its noun agreeing, for the human text of a reply or of the queue CLI:
 * `1 second`, `300 seconds`, `1 mailbox`, `3 mailboxes`. Never for a field a program
 * parses. This module imports nothing, so that a package may take it alone
 * (`@mailyard/smtp-core/plural`) without the rest of smtp-core.
 */
export const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;
