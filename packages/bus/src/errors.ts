import { ContractError } from '@mailyard/contracts';

/** The broker cannot be reached, or the connection dropped before the confirm. */
export class BusUnavailableError extends Error {
  override readonly name: string = 'BusUnavailableError';
}
/** The broker confirmed but could not route the message to any queue (mandatory flag). */
export class UnroutableError extends Error {
  override readonly name = 'UnroutableError';
}
/** Thrown by a consumer handler for a message that can never be processed: dead-letter it now. */
export class PoisonMessageError extends Error {
  override readonly name = 'PoisonMessageError';
}

/**
 * Thrown by a consumer handler when a backend it needs (Redis) failed: the message is
 * not at fault and no answer was had. The bus holds the message and runs the handler
 * again after a growing pause, without returning it to the queue or counting an
 * attempt, so an outage of any length never dead-letters it.
 */
export class BackendUnavailableError extends Error {
  override readonly name = 'BackendUnavailableError';
}

/** A backend call (`backend` names it: "Redis") whose failure holds the message, never fails it. */
export function holdOnFailure<T>(backend: string, p: Promise<T>): Promise<T> {
  return p.catch((err: unknown) => {
    throw new BackendUnavailableError(`${backend}: ${err instanceof Error ? err.message : String(err)}`, {
      cause: err,
    });
  });
}

/** An RPC request got no answer within its timeout (it expires unread, or was answered too late). */
export class RpcTimeoutError extends Error {
  override readonly name = 'RpcTimeoutError';
}
/** The connection went after an RPC request was sent and before its answer came. */
export class RpcLostError extends BusUnavailableError {
  override readonly name = 'RpcLostError';
}
/** An RPC answer came that does not match the reply schema of its catalogue entry. */
export class RpcReplyError extends ContractError {
  override readonly name = 'RpcReplyError';
}
