/** An entry of a restriction list that cannot be used, with one sentence saying why. */
export class RestrictionError extends Error {
  override readonly name = 'RestrictionError';
}
