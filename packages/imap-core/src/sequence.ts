// Sequence sets, RFC 9051 §9 (sequence-set). `*` is the largest number in use.

export type SeqRange = readonly [from: number, to: number];
/** A parsed set; `null` bounds stand for `*`. */
export type SequenceSet = { ranges: { from: number | null; to: number | null }[]; saved?: boolean };

export class SequenceError extends Error {}

export function parseSequenceSet(text: string): SequenceSet {
  if (text === '$') return { ranges: [], saved: true };
  if (!text) throw new SequenceError('empty sequence set');
  const ranges = text.split(',').map((part) => {
    const m = /^(\d+|\*)(?::(\d+|\*))?$/.exec(part);
    if (!m) throw new SequenceError(`bad sequence set element "${part}"`);
    const num = (s: string): number | null => {
      if (s === '*') return null;
      const n = Number(s);
      if (n < 1 || n > 0xffffffff) throw new SequenceError(`sequence number ${s} out of range`);
      return n;
    };
    const from = num(m[1]!);
    return { from, to: m[2] === undefined ? from : num(m[2]) };
  });
  return { ranges };
}

/** The sequence set of exactly these numbers (in any order), as sorted, merged ranges. */
export function sequenceSetOf(nums: Iterable<number>): SequenceSet {
  const ranges: { from: number; to: number }[] = [];
  for (const n of [...nums].sort((a, b) => a - b)) {
    const last = ranges[ranges.length - 1];
    if (last && n <= last.to + 1) last.to = Math.max(last.to, n);
    else ranges.push({ from: n, to: n });
  }
  return { ranges };
}

/** Resolves `*` against `max` and returns sorted, merged ranges. */
export function resolveSequenceSet(set: SequenceSet, max: number): SeqRange[] {
  const rs = set.ranges.map(({ from, to }) => {
    const a = from ?? max;
    const b = to ?? max;
    return [Math.min(a, b), Math.max(a, b)] as [number, number];
  });
  rs.sort((x, y) => x[0] - y[0]);
  const out: [number, number][] = [];
  for (const r of rs) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
    else out.push([r[0], r[1]]);
  }
  return out;
}

export function inRanges(n: number, ranges: readonly SeqRange[]): boolean {
  let lo = 0;
  let hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const r = ranges[mid]!;
    if (n < r[0]) hi = mid - 1;
    else if (n > r[1]) lo = mid + 1;
    else return true;
  }
  return false;
}

/**
 * The parts of `within` (sorted, merged ranges) that hold none of `present` (ascending):
 * the UIDs of a set that are not in a mailbox, as ranges however many they are.
 */
export function missingRanges(within: readonly SeqRange[], present: readonly number[]): SeqRange[] {
  const out: SeqRange[] = [];
  let i = 0;
  for (const [from, to] of within) {
    let next = from;
    while (i < present.length && present[i]! < from) i++;
    while (i < present.length && present[i]! <= to) {
      if (present[i]! > next) out.push([next, present[i]! - 1]);
      next = present[i]! + 1;
      i++;
    }
    if (next <= to) out.push([next, to]);
  }
  return out;
}

/** Text form of sorted ranges: 1:3,7,9:10. */
export function formatRanges(ranges: readonly SeqRange[]): string {
  return ranges.map(([a, b]) => (a === b ? String(a) : `${a}:${b}`)).join(',');
}

/** Compact text form of a sorted list of numbers: 1:3,7,9:10. */
export function formatSequence(nums: readonly number[]): string {
  const sorted = [...nums].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1]! <= sorted[j]! + 1) j++;
    parts.push(sorted[i] === sorted[j] ? String(sorted[i]) : `${sorted[i]}:${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/**
 * A list of numbers in the order given (ESORT's ALL, RFC 5267 §3): only ascending runs
 * become ranges, so `2:3,1,4:5` keeps the sort order.
 */
export function formatOrderedSequence(nums: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < nums.length;) {
    let j = i;
    while (j + 1 < nums.length && nums[j + 1] === nums[j]! + 1) j++;
    parts.push(i === j ? String(nums[i]) : `${nums[i]}:${nums[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}
