/**
 * Bounds the `domain` label of the attempts counter: the `limit` destination domains
 * with the most attempts keep a label of their own, every other one is counted as
 * `other`, so a spammer's or a mailing list's thousands of domains cannot grow the
 * series without end. Counts are kept for a bounded set of candidates (space-saving:
 * a newcomer that finds the table full takes the place of the least counted one, with
 * its count, so a domain that keeps coming climbs). A candidate takes a labelled place
 * when it has over twice the attempts of the weakest labelled domain, which then loses
 * its series (`onDrop`); the margin keeps two domains of similar traffic from swapping
 * back and forth.
 */
export class TopDomains {
  private readonly counts = new Map<string, number>();
  private readonly labelled = new Set<string>();
  private readonly tracked: number;

  constructor(
    private readonly limit: number,
    private readonly onDrop: (domain: string) => void = () => undefined,
  ) {
    this.tracked = Math.max(100, limit * 10);
  }

  /** The label value for one attempt to `domain` (counts the attempt). */
  label(domain: string): string {
    const d = domain.toLowerCase();
    const count = (this.counts.get(d) ?? this.admit()) + 1;
    this.counts.set(d, count);
    if (this.labelled.has(d)) return d;
    if (this.labelled.size < this.limit) {
      this.labelled.add(d);
      return d;
    }
    let weakest: string | null = null;
    let least = Infinity;
    for (const l of this.labelled) {
      const c = this.counts.get(l) ?? 0;
      if (c < least) [weakest, least] = [l, c];
    }
    if (weakest === null || count <= 2 * least) return OTHER;
    this.labelled.delete(weakest);
    this.onDrop(weakest);
    this.labelled.add(d);
    return d;
  }

  /** The count a new candidate starts from: 0, or the evicted one's when the table is full. */
  private admit(): number {
    if (this.counts.size < this.tracked) return 0;
    let victim: string | null = null;
    let least = Infinity;
    for (const [d, c] of this.counts) {
      if (!this.labelled.has(d) && c < least) [victim, least] = [d, c];
    }
    if (victim === null) return 0;
    this.counts.delete(victim);
    return least;
  }
}

/** The label of every destination domain outside the top N. */
export const OTHER = 'other';
