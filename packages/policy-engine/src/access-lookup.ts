import { PolicyKeys, parseAccessAction, type AccessAction, type PolicyReplies } from '@mailyard/policy-rules';
import {
  DISCARD,
  DUNNO,
  HOLD,
  PERMIT,
  note,
  refuse,
  type CheckContext,
  type RedisBatch,
  type Verdict,
} from './check-context.js';

// The access tables of check_client_access, check_sender_access and
// check_recipient_access (Postfix access(5)): read in the stage's pipeline (or from an
// intake's copy in process), most specific key first; the first key found decides.

const lookupKey = (check: string, table: string) => `${check}:${table}`;

/** Queues the table lookup of `keys` (most specific first), unless the in-process copy answers it. */
export function queueAccessLookup(
  ctx: CheckContext,
  batch: RedisBatch,
  check: string,
  table: string,
  keys: string[],
): void {
  if (!keys.length) return;
  const k = lookupKey(check, table);
  const copy = ctx.env.accessTables?.()?.lookup(table, keys);
  if (copy !== undefined) {
    ctx.access.set(k, copy);
    return;
  }
  batch.read(
    `access:${k}`,
    (p) => p.hmget(PolicyKeys.access(table), ...keys),
    (v) => ctx.access.set(k, ((v as (string | null)[]) ?? []).find((x) => x !== null) ?? null),
  );
}

/** The verdict of the action found for `subject` (`<a@b.example>`), as Postfix words it. */
export function accessVerdict(
  ctx: CheckContext,
  check: string,
  table: string,
  subject: string,
  what: string,
  reply: Pick<PolicyReplies, 'accessRefused'>,
): Verdict {
  const text = ctx.access.get(lookupKey(check, table));
  if (!text) return DUNNO;
  let a: AccessAction;
  try {
    a = parseAccessAction(text);
  } catch {
    ctx.env.logger.warn({ table, text }, 'bad action in access table, ignored');
    return DUNNO;
  }
  note(ctx, check, a.kind, `${table}: ${text}`);
  switch (a.kind) {
    case 'permit':
      return PERMIT;
    case 'dunno':
      return DUNNO;
    case 'discard':
      return DISCARD;
    case 'hold':
      return HOLD;
    case 'reject':
    case 'defer':
      return refuse(reply.accessRefused(a, subject, what));
  }
}
