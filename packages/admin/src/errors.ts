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
