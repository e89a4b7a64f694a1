import { bytesOrUnlimited } from '@mailyard/config';
import { OperationError } from './errors.js';

const size = bytesOrUnlimited(0);

/**
 * A storage quota as an administrator writes it, in the CLI and the console alike: a size
 * as QUOTA_STORAGE takes it (`512M`, `2G`, `1048576`), `unlimited` (or 0), or `default`
 * for the installation's QUOTA_STORAGE again (null).
 */
export function parseQuota(text: string): number | null {
  const t = text.trim().toLowerCase();
  if (t === 'default') return null;
  if (t === 'unlimited') return 0;
  const r = size.safeParse(t);
  if (!r.success || !Number.isSafeInteger(r.data))
    throw new OperationError(
      'invalid',
      `"${text}" is not a quota (a size such as 512M or 2G, "unlimited", or "default")`,
    );
  return r.data;
}
