/**
 * An entry of a restriction list that cannot be used, with one sentence saying why
 * (`invalid`), an entry removed that is not in the list (`not_found`), or a list
 * replaced from a copy that another change has made stale (`changed`).
 */
export class RestrictionError extends Error {
  override readonly name = 'RestrictionError';
  constructor(
    message: string,
    readonly code: 'invalid' | 'not_found' | 'changed' = 'invalid',
  ) {
    super(message);
  }
}
