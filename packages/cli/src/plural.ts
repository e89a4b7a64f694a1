/** A count with its noun agreeing: `1 day`, `2 days`, `1 mailbox`, `3 mailboxes`. */
export const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;
