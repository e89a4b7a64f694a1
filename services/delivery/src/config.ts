import { z } from 'zod';
import {
  addressingSchema,
  commonSchema,
  directoryCacheSchema,
  mailStoreSchema,
  positiveInt,
  quotaSchema,
} from '@mailyard/config';
import { MailMessages } from '@mailyard/contracts';

export const deliverySchema = z.object({
  ...commonSchema,
  ...mailStoreSchema,
  ...addressingSchema,
  /** Messages processed at once (AMQP prefetch). */
  delivery_prefetch: positiveInt(64),
  /** Failed attempts before a message goes to the dead-letter queue with its reason (catalogue default). */
  delivery_max_attempts: positiveInt(MailMessages.delivery.failure.maxAttempts),
  /** How long the "already delivered" markers are kept, in seconds (covers any redelivery). */
  delivery_dedupe_ttl: positiveInt(14 * 24 * 3600),
  /** Folder for mail the policy service holds as spam (quarantine). */
  junk_folder: z.string().min(1).default('Junk'),
  /** Folder for bulk/advertising mail marked by the policy service; INBOX leaves it there (e.g. Promotions). */
  bulk_folder: z.string().min(1).default('INBOX'),
  ...directoryCacheSchema,
  ...quotaSchema,
});
export type DeliveryConfig = z.infer<typeof deliverySchema>;
