/**
 * argon2id with OWASP's baseline parameters (19 MiB, 2 passes, 1 lane): about 20 ms
 * per hash on this class of machine, memory-hard against GPU guessing.
 */
// algorithm 2 is Algorithm.Argon2id (a const enum, which isolated modules cannot read)
export const ARGON2_PARAMS = { algorithm: 2, memoryCost: 19456, timeCost: 2, parallelism: 1 } as const;

// imported at the first hash or check: a `mailyard` command that sets no password (most
// of them) does not load the native module
const argon2 = () => import('@node-rs/argon2');

export async function hashPassword(password: string): Promise<string> {
  return (await argon2()).hash(password, ARGON2_PARAMS);
}

/**
 * False for a wrong password or a stored value that is no argon2 hash. A hashing module
 * that cannot be loaded is thrown, not taken for a wrong password: the login is then a
 * temporary failure, not counted toward a lockout of the account's own user.
 */
export async function verifyPassword(stored: string, password: string): Promise<boolean> {
  const { verify } = await argon2();
  try {
    return await verify(stored, password);
  } catch {
    return false;
  }
}

const COMMON = new Set([
  'password',
  'password1',
  'password123',
  '123456789',
  '1234567890',
  'qwertyuiop',
  'iloveyou12',
  'letmein123',
  'welcome123',
  'administrator',
  'changeme123',
  'passw0rd123',
  'qwerty123456',
  '1q2w3e4r5t',
]);

/** Returns why a password is too weak, or null when it is acceptable. */
export function passwordWeakness(password: string, address?: string): string | null {
  if (!password) return 'password is empty';
  if (password.length < 10) return 'password is too short (at least 10 characters)';
  if (password.length > 1024) return 'password is too long (at most 1024 characters)';
  if (COMMON.has(password.toLowerCase())) return 'password is a commonly used one';
  if (new Set(password).size < 4) return 'password repeats too few characters';
  const local = address?.split('@')[0]?.toLowerCase();
  if (local && password.toLowerCase().includes(local) && local.length >= 4)
    return 'password contains the account name';
  return null;
}
