import { z } from 'zod';

/** Published after a message is durably filed into a folder (IDLE, webmail refresh). */
export const MailboxChanged = z.object({
  v: z.literal(1),
  account: z.string(),
  folder: z.string(),
  /** Queue id of the delivered message, when the change came from delivery. */
  queueId: z.string().nullable(),
  at: z.string().datetime(),
});
export type MailboxChanged = z.infer<typeof MailboxChanged>;
