import { createHash, randomFillSync } from 'node:crypto';

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
  if (poolOffset + 8 > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  let s = '';
  for (let i = 0; i < 8; i++) s += ALPHABET[pool[poolOffset++]! % ALPHABET.length]!;
  return t + s;
}

// random bytes fetched 64 ids at a time (one call into the CSPRNG instead of one per id)
const pool = Buffer.alloc(512);
let poolOffset = pool.length;

/**
 * The queue id of a message made from another (`parent`) for `key` (a forward for an
 * account): the same every time, so a rerun that makes it again publishes it under the
 * same id and the next hop's duplicate checks (per queue id and recipient) catch it. The
 * parent's time prefix, then eight characters of a digest: 16 characters, as newQueueId.
 */
export function derivedQueueId(parent: string, key: string): string {
  const digest = createHash('sha256').update(`${parent}\0${key}`).digest();
  let s = '';
  for (let i = 0; i < 8; i++) s += ALPHABET[digest[i]! % ALPHABET.length]!;
  return parent.slice(0, 8) + s;
}
