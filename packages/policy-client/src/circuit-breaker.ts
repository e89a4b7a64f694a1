export type BreakerState = 'closed' | 'open' | 'half-open';

export interface BreakerOptions {
  /** Consecutive failures (timeouts, broker unreachable) that open the circuit. */
  threshold: number;
  /** How long it stays open before one request may probe again. */
  openMs: number;
  onChange?: (state: BreakerState) => void;
  now?: () => number;
}

/**
 * A circuit breaker for the policy RPC. While the policy service does not answer, every
 * session would wait for the timeout before getting the same refusal: after `threshold`
 * failures in a row the circuit opens and requests are answered at once, without asking;
 * after `openMs` one request (the probe) goes out, and its answer closes the circuit, its
 * failure opens it again.
 */
export class CircuitBreaker {
  private current: BreakerState = 'closed';
  private failures = 0;
  private openedAt = 0;
  private probing = false;
  private readonly now: () => number;

  constructor(private readonly opts: BreakerOptions) {
    this.now = opts.now ?? Date.now;
  }

  get state(): BreakerState {
    return this.current;
  }

  /** May a request go out now? Half-open, only one at a time: the probe. */
  allow(): boolean {
    if (this.current === 'open') {
      if (this.now() - this.openedAt < this.opts.openMs) return false;
      this.set('half-open');
    }
    if (this.current === 'half-open') {
      if (this.probing) return false;
      this.probing = true;
    }
    return true;
  }

  /** An answer came: the service works. */
  success(): void {
    this.failures = 0;
    this.probing = false;
    this.set('closed');
  }

  /** A request failed for want of an answer. */
  failure(): void {
    if (this.current === 'open') return;
    this.probing = false;
    if (this.current === 'half-open' || ++this.failures >= this.opts.threshold) {
      this.openedAt = this.now();
      this.set('open');
    }
  }

  private set(state: BreakerState): void {
    if (state === this.current) return;
    this.current = state;
    this.opts.onChange?.(state);
  }
}
