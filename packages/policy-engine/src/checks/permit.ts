import { PERMIT, type CheckImplementation } from '../check-context.js';

/** `permit`: ends this list without refusing; the next stage's lists still run. */
export const permit: CheckImplementation<'permit'> = {
  run: () => PERMIT,
};
