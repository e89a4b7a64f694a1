/**
 * A count with its noun agreeing, for the human text of a reply: `1 second`, `300 seconds`,
 * `1 mailbox`, `3 mailboxes`. Never for a field a program parses.
 */
export const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;
