/**
 * An entry of a restriction list that cannot be used, with one sentence saying why
 * (`invalid`), or an entry removed that is not in the list (`not_found`).
 */
export class RestrictionError extends Error {
  override readonly name = 'RestrictionError';
  constructor(
    message: string,
    readonly code: 'invalid' | 'not_found' = 'invalid',
  ) {
    super(message);
  }
}
