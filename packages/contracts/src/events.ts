import { z } from 'zod';

/** Published after a message is durably filed into a folder (IDLE, webmail refresh). */
export const MailboxChanged = z.object({
  v: z.literal(1),
  account: z.string(),
  folder: z.string(),
  /** Queue id of the delivered message, when the change came from delivery. */
  queueId: z.string().nullable(),
  at: z.string().datetime(),
  /**
   * What changed: the messages (also when absent, as every publisher before it sent),
   * the folder itself (created, deleted or renamed: `folder` is its name now), or the
   * subscriptions. Optional, so consumers that know only `folder` read it as before.
   */
  kind: z.enum(['messages', 'folder', 'subscription']).optional(),
  /** RENAME: the folder's previous name. */
  oldFolder: z.string().optional(),
});
export type MailboxChanged = z.infer<typeof MailboxChanged>;
