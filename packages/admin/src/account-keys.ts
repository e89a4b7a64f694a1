import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { appPasswordKeys, loginHistoryKey, twoFactorKeys } from '@mailyard/auth';
import { mailRulesKeys, mailRulesRepliedPattern } from '@mailyard/mail-rules';
import { PolicyKeys } from '@mailyard/policy-rules';

// a digest of the address: whoever lists Redis's keys does not learn whom they are about
const accountTag = (account: string) =>
  createHash('sha256').update(account.toLowerCase()).digest('base64url');

/** The keys the webmail keeps per account (renaming one is a migration). */
export const WebmailKeys = {
  /** SET of the senders whose mail may load remote content (no TTL). */
  remoteSenders: (account: string) => `webmail:remote-senders:${accountTag(account)}`,
  /** ZSET of the uploads waiting to be sent: member `<id>:<size>`, score when it expires (s). */
  uploads: (account: string) => `webmail:uploads:${accountTag(account)}`,
  /** HASH of one waiting upload (name, type, size, data), with a TTL. */
  upload: (account: string, id: string) => `webmail:upload:${accountTag(account)}:${id}`,
  /** A save replacing the draft of this UID is under way (a short-lived marker: not in accountKeys). */
  draftReplacing: (account: string, uid: number) => `webmail:draft-replacing:${accountTag(account)}:${uid}`,
} as const;

/**
 * Every key kept for an account beside its record, by every service: `user del` removes
 * them with the record, so that a new account of the same address starts with none of
 * them. A service that keeps something new for an account adds it here, or, when the
 * keys are one per something else, its pattern to accountKeyPatterns. Not here: the
 * webmail's sessions (ended on every instance by endWebmailSessions), the quota and the
 * failed-login counts (Quotas.clear, LoginGuard.unlock), and markers that expire within
 * minutes (a POP3 lock, a used TOTP code).
 */
export async function accountKeys(redis: Redis, account: string): Promise<string[]> {
  const a = account.toLowerCase();
  const uploads = await redis.zrange(WebmailKeys.uploads(a), 0, -1);
  return [
    ...appPasswordKeys(a),
    ...twoFactorKeys(a),
    loginHistoryKey(a),
    ...mailRulesKeys(a),
    PolicyKeys.userList(a, 'allow'),
    PolicyKeys.userList(a, 'block'),
    WebmailKeys.remoteSenders(a),
    WebmailKeys.uploads(a),
    ...uploads.map((m) => WebmailKeys.upload(a, m.slice(0, m.lastIndexOf(':')))),
  ];
}

/** SCAN patterns of the keys kept for an account one per something else, each with a TTL. */
export const accountKeyPatterns = (account: string) => [mailRulesRepliedPattern(account)];

/**
 * Removes the keys of accountKeyPatterns (the out-of-office reply's "replied to this
 * sender" markers): a SCAN over every key, so it runs after the record is gone, with the
 * rest of the clean-up; the markers expire by themselves if it fails.
 */
export async function deleteAccountPatternKeys(redis: Redis, account: string): Promise<void> {
  // SCAN sees the stored names: the prefix is added to the pattern and taken off the results
  const prefix = redis.options.keyPrefix ?? '';
  for (const pattern of accountKeyPatterns(account)) {
    let cursor = '0';
    do {
      const [next, found] = await redis.scan(cursor, 'MATCH', prefix + pattern, 'COUNT', 1000);
      if (found.length) await redis.del(...found.map((f) => f.slice(prefix.length)));
      cursor = next;
    } while (cursor !== '0');
  }
}
