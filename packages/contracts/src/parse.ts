import type { z } from 'zod';

/** A payload from the bus does not match its contract. */
export class ContractError extends Error {
  override readonly name: string = 'ContractError';
}

/**
 * Validates a payload from the bus (an object, or JSON text or bytes) against `schema`;
 * throws ContractError naming `what` and the first bad field.
 */
export function parsePayload<S extends z.ZodType>(schema: S, raw: unknown, what: string): z.output<S> {
  let value = raw;
  if (typeof raw === 'string' || Buffer.isBuffer(raw)) {
    try {
      value = JSON.parse(raw.toString());
    } catch {
      throw new ContractError(`${what} is not JSON`);
    }
  }
  const result = schema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    throw new ContractError(`invalid ${what}: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
  }
  return result.data;
}
