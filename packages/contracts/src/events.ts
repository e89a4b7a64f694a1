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

/**
 * Published when a user moves messages into Junk (`learn.spam`) or out of it
 * (`learn.ham`), for the spam filter to learn from. The copies are in `folderDir`
 * (on the shared mail store) under the given UIDs.
 */
export const LearnMessages = z.object({
  v: z.literal(1),
  account: z.string(),
  from: z.string(),
  to: z.string(),
  folderDir: z.string(),
  uids: z.array(z.number().int().positive()),
  sourceUids: z.array(z.number().int().positive()),
  at: z.string().datetime(),
});
export type LearnMessages = z.infer<typeof LearnMessages>;
