import { Queues, type PolicyDecision, type PolicyRequestInput } from '@mailyard/contracts';
import { cachedCheck, type ReadinessCheck } from '@mailyard/observability';
import { SmtpReject } from '@mailyard/smtp-core';

/**
 * The glue between an smtp-server session and the policy RPC, shared by mta-inbound
 * (port 25) and msa (submission): what a listener needs from a client, the verdicts
 * that outlive one stage, and how a refusing decision becomes an SMTP reply.
 */

/** What a listener needs from a policy client (PolicyClient, or a stub in tests). */
export interface PolicyAsker {
  ask(request: Omit<PolicyRequestInput, 'v'>, message?: Buffer, timeoutMs?: number): Promise<PolicyDecision>;
  start(): void;
  stop(): Promise<void>;
}

/** Policy verdicts that outlive one stage: held for Junk, to be discarded, or accepted early. */
export interface PolicyState {
  junk: Set<string>;
  junkAll: boolean;
  discard: boolean;
  accepted: boolean;
  /** The MAIL stage was left to the next RCPT's request (PolicyRequest.withMail). */
  mailLeft: boolean;
}

/** The parts of an smtp-server session the state is keyed on. */
interface SessionLike {
  envelope: object;
}

/**
 * Verdicts per session (connect) and per transaction (MAIL, RCPT). Keyed weakly on
 * the session and on its envelope object, which smtp-server replaces on RSET, EHLO
 * and at the end of a message, so a new transaction starts from the session's state.
 */
export class PolicyVerdicts {
  private readonly sessions = new WeakMap<object, PolicyState>();
  private readonly transactions = new WeakMap<object, PolicyState>();

  /** Records the connect-stage decision. */
  connected(session: SessionLike, d: PolicyDecision): void {
    const st = newState();
    applyVerdict(st, d);
    this.sessions.set(session, st);
  }

  /** The current transaction's state (created on first use). */
  tx(session: SessionLike): PolicyState {
    let st = this.transactions.get(session.envelope);
    if (!st) {
      st = newState();
      const s = this.sessions.get(session);
      if (s) {
        st.junkAll = s.junkAll;
        st.discard = s.discard;
      }
      this.transactions.set(session.envelope, st);
    }
    return st;
  }
}

function newState(): PolicyState {
  return { junk: new Set(), junkAll: false, discard: false, accepted: false, mailLeft: false };
}

/** Folds a non-refusing decision into the state; `rcpt` limits a quarantine to that recipient. */
export function applyVerdict(st: PolicyState, d: PolicyDecision, rcpt?: string): void {
  if (d.action === 'discard') st.discard = true;
  if (d.action === 'accept') st.accepted = true;
  if (d.action === 'quarantine') {
    if (rcpt && d.junk.length) for (const j of d.junk) st.junk.add(j);
    else st.junkAll = true;
  }
}

/**
 * Turns a refusing decision into the SmtpReject to send; null when the transaction goes
 * on. `answeredAt` is the command it answers, when not the stage's own (the client list
 * asked at MAIL, after login).
 */
export function policyReject(d: PolicyDecision, stage: string, answeredAt = stage): SmtpReject | null {
  if ((d.action !== 'reject' && d.action !== 'tempfail') || !d.reply) return null;
  let { code, enhanced } = d.reply;
  // RFC 5321 §3.1: at connect only 554 (refused) or 421 (try later) make sense
  if (answeredAt === 'connect') {
    code = code >= 500 ? 554 : 421;
    enhanced = code >= 500 ? enhanced : enhanced.replace(/^5/, '4');
  }
  return new SmtpReject(code, enhanced, d.reply.text, `policy_${stage}`);
}

/** How long /readyz trusts the broker's count of policy consumers. */
const POLICY_CONSUMERS_TTL_MS = 1500;

/**
 * Readiness of a listener that asks the policy service: something consumes the policy
 * queue. Without a consumer every request would wait for its timeout and be refused.
 */
export function policyServiceCheck(consumerCount: (queue: string) => Promise<number>): ReadinessCheck {
  return {
    name: 'policy-service',
    ok: cachedCheck(POLICY_CONSUMERS_TTL_MS, async () => (await consumerCount(Queues.policy)) > 0),
  };
}
