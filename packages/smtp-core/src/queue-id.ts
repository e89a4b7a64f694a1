import { randomBytes } from 'node:crypto';

const ALPHABET = '0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjkmnpqrstvwxz';

/**
 * A queue id like Postfix's long queue ids: time-ordered prefix, random suffix,
 * letters and digits only (no vowels, so no words), 16 characters.
 */
export function newQueueId(now = Date.now()): string {
  let t = '';
  let n = Math.floor(now);
  for (let i = 0; i < 8; i++) {
    t = ALPHABET[n % ALPHABET.length]! + t;
    n = Math.floor(n / ALPHABET.length);
  }
  const rnd = randomBytes(8);
  let s = '';
  for (const b of rnd) s += ALPHABET[b % ALPHABET.length]!;
  return t + s;
}
