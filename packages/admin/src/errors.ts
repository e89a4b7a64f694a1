/**
 * An operation refused for a reason the administrator can fix (a bad name, a duplicate,
 * an unknown app password); the message is one sentence. The directory's own refusals
 * stay DirectoryErrors. Anything else (Redis failing) keeps its own class, so the CLI
 * and the console report it as a temporary failure, never as an answer.
 */
export class OperationError extends Error {
  override readonly name = 'OperationError';
  constructor(
    readonly code: 'invalid' | 'duplicate' | 'not_found' | 'limit',
    message: string,
  ) {
    super(message);
  }
}

/**
 * DNS could not answer now (a timeout, SERVFAIL): a temporary failure, never taken as
 * "not published". The message is one sentence.
 */
export class DnsUnavailableError extends Error {
  override readonly name = 'DnsUnavailableError';
}

/**
 * An account cannot be created because an earlier deletion of its address left clean-up
 * steps undone, and they failed again (Redis trouble): a temporary failure, whose message
 * (one sentence) names what is left.
 */
export class CleanupPendingError extends Error {
  override readonly name = 'CleanupPendingError';
}
