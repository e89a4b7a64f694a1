import { BusUnavailableError, RpcLostError, RpcReplyError, RpcTimeoutError, type Bus } from '@mailyard/bus';
import type { PolicyDecision } from '@mailyard/contracts';
import { POLICY_VERSION, PolicyRequest, PolicyRpc, type PolicyRequestInput } from '@mailyard/contracts';
import { Counter, Gauge, type Logger, type Registry } from '@mailyard/observability';
import { CircuitBreaker, type BreakerState } from './circuit-breaker.js';
import { defaultDecision, type PolicyDefaultAction } from './default-action.js';

/** What the client needs of the bus: its request/reply. */
export type PolicyBus = Pick<Bus, 'call'>;

export interface PolicyClientOptions {
  /** The process's bus: requests go over its connection (RPC with direct reply-to). */
  bus: PolicyBus;
  logger: Logger;
  /** How long to wait for a decision. */
  timeoutMs: number;
  /** The decision when none arrives in time or the broker is unreachable. */
  defaultAction: PolicyDefaultAction;
  /** Failures in a row that open the circuit, and how long it stays open (default 3, 5 s). */
  breaker?: { threshold: number; openMs: number };
  /** Called with the round-trip time of every request, in seconds (metrics). */
  observe?: (stage: string, seconds: number, outcome: 'answered' | 'timeout' | 'error') => void;
  /** Called when the circuit opens, half-opens or closes, and for every request answered without asking. */
  breakerEvents?: { state(state: BreakerState): void; shortCircuit(): void };
}

type Outcome = 'answered' | 'timeout' | 'error';

/**
 * Asks services/policy for a decision over the bus's RPC (queue `policy`, direct
 * reply-to). Never throws: a timeout or an unreachable broker yields the default action,
 * so an SMTP session always gets an answer; and while the service keeps not answering,
 * the circuit breaker gives it at once.
 */
export class PolicyClient {
  /** Requests waiting for an answer, each settled with the default action by stop(). */
  private readonly waiting = new Set<() => void>();
  private stopped = false;
  private readonly log: Logger;
  private readonly breaker: CircuitBreaker;

  constructor(private readonly opts: PolicyClientOptions) {
    this.log = opts.logger.child({ component: 'policy-client' });
    this.breaker = new CircuitBreaker({
      ...(opts.breaker ?? { threshold: 3, openMs: 5000 }),
      onChange: (state) => {
        if (state === 'open') this.log.warn('policy service not answering: default action without asking');
        else if (state === 'closed') this.log.info('policy service answering again');
        opts.breakerEvents?.state(state);
      },
    });
  }

  /** closed (asking), open (answering with the default action), half-open (probing). */
  get breakerState(): BreakerState {
    return this.breaker.state;
  }

  /** Asks from now on (the bus connects by itself). */
  start(): void {
    this.stopped = false;
  }

  private fallback(reason: string): PolicyDecision {
    return defaultDecision(this.opts.defaultAction, {
      check: 'policy_service',
      result: 'unavailable',
      detail: reason,
    });
  }

  /** Asks for a decision; `message` is the raw message at the data stage. */
  async ask(
    request: Omit<PolicyRequestInput, 'v'>,
    message?: Buffer,
    timeoutMs = this.opts.timeoutMs,
  ): Promise<PolicyDecision> {
    const req = PolicyRequest.parse({ ...request, v: POLICY_VERSION });
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    if (this.stopped) return this.fallback('client stopped');
    if (!this.breaker.allow()) {
      this.opts.breakerEvents?.shortCircuit();
      return this.fallback('policy service not answering (circuit open)');
    }
    return new Promise<PolicyDecision>((resolve) => {
      let settled = false;
      // an answer (even one that breaks the contract) means the service works
      const settle = (d: PolicyDecision, outcome: Outcome) => {
        if (settled) return;
        settled = true;
        this.waiting.delete(stop);
        if (outcome === 'answered') this.breaker.success();
        else this.breaker.failure();
        this.opts.observe?.(req.stage, seconds(), outcome);
        resolve(d);
      };
      const stop = () => settle(this.fallback('client stopped'), 'error');
      this.waiting.add(stop);
      this.opts.bus.call(PolicyRpc, req, { timeoutMs, ...(message ? { body: message } : {}) }).then(
        (d) => settle(d, 'answered'),
        (err: unknown) => {
          const sid = req.sessionId;
          if (err instanceof RpcReplyError) {
            this.log.warn({ err, sid }, 'policy service sent an invalid decision');
            settle(this.fallback('invalid decision'), 'answered');
          } else if (err instanceof RpcTimeoutError) {
            this.log.warn({ sid, stage: req.stage }, 'policy service did not answer in time');
            settle(this.fallback('timeout'), 'timeout');
          } else if (err instanceof RpcLostError) {
            settle(this.fallback('connection to the broker lost'), 'error');
          } else {
            if (!(err instanceof BusUnavailableError)) this.log.error({ err, sid }, 'policy request failed');
            else this.log.warn({ err, sid }, 'policy service unreachable');
            settle(this.fallback('broker unreachable'), 'error');
          }
        },
      );
    });
  }

  /** Answers the requests still waiting with the default action; later ones get it at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const stop of [...this.waiting]) stop();
  }
}

/** The config a listener (mta-inbound, msa) builds its policy client from. */
export interface PolicyClientConfig {
  policy_timeout: number;
  smtpd_policy_service_default_action: PolicyDefaultAction;
  policy_breaker_threshold: number;
  policy_breaker_open_time: number;
}

const BREAKER_STATES = ['closed', 'open', 'half-open'] as const satisfies BreakerState[];

/**
 * The policy client of a listener, with its circuit breaker's metrics:
 * `mailyard_<service>_policy_breaker_state{state}` (1 for the current state) and
 * `mailyard_<service>_policy_short_circuits_total`.
 */
export function createPolicyClient(
  service: string,
  config: PolicyClientConfig,
  deps: { bus: PolicyBus; logger: Logger; registry: Registry; observe?: PolicyClientOptions['observe'] },
): PolicyClient {
  const prefix = `mailyard_${service.replace(/-/g, '_')}_policy`;
  const state = new Gauge({
    name: `${prefix}_breaker_state`,
    help: 'Policy RPC circuit breaker: 1 for the current state (closed: asking; open: default action without asking; half-open: one request probing)',
    labelNames: ['state'] as const,
    registers: [deps.registry],
  });
  const shortCircuits = new Counter({
    name: `${prefix}_short_circuits_total`,
    help: 'Policy requests answered with smtpd_policy_service_default_action at once, the circuit being open',
    registers: [deps.registry],
  });
  const setState = (current: BreakerState) => {
    for (const s of BREAKER_STATES) state.set({ state: s }, s === current ? 1 : 0);
  };
  setState('closed');
  return new PolicyClient({
    bus: deps.bus,
    logger: deps.logger,
    timeoutMs: config.policy_timeout,
    defaultAction: config.smtpd_policy_service_default_action,
    breaker: { threshold: config.policy_breaker_threshold, openMs: config.policy_breaker_open_time },
    ...(deps.observe ? { observe: deps.observe } : {}),
    breakerEvents: { state: setState, shortCircuit: () => shortCircuits.inc() },
  });
}
