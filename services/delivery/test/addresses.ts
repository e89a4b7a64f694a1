/** `n` external addresses of 40 characters each, sorted as numbered (`<tag>-00000xx...@far-away.test`). */
export const remoteMembers = (tag: string, n: number): string[] =>
  Array.from(
    { length: n },
    (_, i) => `${tag}-${String(i).padStart(5, '0')}`.padEnd(26, 'x') + '@far-away.test',
  );
