import { BusUnavailableError, UnroutableError } from '@mailyard/bus';

/** A problem for the operator, one sentence: the broker unreachable, another reader busy. */
export class QueueAdminError extends Error {
  override readonly name = 'QueueAdminError';
}

/** Runs `fn`, reporting the broker's failures as QueueAdminErrors (temporary: try again). */
export async function reportingBrokerErrors<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof BusUnavailableError || err instanceof UnroutableError)
      throw new QueueAdminError(err.message);
    throw err;
  }
}
