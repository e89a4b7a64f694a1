import { z } from 'zod';
import {
  addressingSchema,
  bytesOrUnlimited,
  commonSchema,
  duration,
  mailStoreSchema,
  positiveInt,
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
  /**
   * How long recipient lookups are kept in process (0: not at all). Changes made with
   * `mailyard` reach every instance at once; the TTL bounds staleness otherwise.
   */
  directory_cache_ttl: duration('60s'),
  /** Storage quota per account (512M, 2G...) unless Redis holds an override (hash quota:storage); unset: unlimited. */
  quota_storage: bytesOrUnlimited(0),
});
export type DeliveryConfig = z.infer<typeof deliverySchema>;
