import { z } from 'zod';
import { DEFAULT_OUTBOUND_RETRY_SCHEDULE_MS } from '@mailyard/bus';
import {
  addressingSchema,
  commonSchema,
  directoryCacheSchema,
  durationList,
  mailStoreSchema,
  positiveInt,
  queueLifetimeSchema,
  quotaSchema,
} from '@mailyard/config';
import { MailMessages } from '@mailyard/contracts';
import { DEFAULT_ALIAS_EXPANSION_LIMIT } from '@mailyard/directory';

export const deliverySchema = z.object({
  ...commonSchema,
  ...mailStoreSchema,
  ...addressingSchema,
  /** Messages processed at once (AMQP prefetch). */
  delivery_prefetch: positiveInt(64),
  /** Failed attempts before a message goes to the dead-letter queue with its reason (catalogue default). */
  delivery_max_attempts: positiveInt(MailMessages.delivery.failure.maxAttempts),
  /**
   * How long the records of what a message's runs did (copies filed, DSNs, forwards) are
   * kept, in seconds: from the run that wrote them, renewed by each run that fails or
   * defers recipients, and never less than MAXIMAL_QUEUE_LIFETIME and a day, which a
   * deferred recipient may wait. Covers any redelivery, and a message moved back from the
   * dead-letter queue within it reaches nobody twice.
   */
  delivery_dedupe_ttl: positiveInt(14 * 24 * 3600),
  /**
   * Addresses one recipient may expand to through aliases, a nested alias counted by its
   * members (Postfix: virtual_alias_expansion_limit). A recipient over it is deferred
   * (4.6.0, logged with the count) and retried on DELIVERY_RETRY_SCHEDULE until
   * MAXIMAL_QUEUE_LIFETIME, then returned to the sender; the message's other recipients
   * get theirs at once.
   */
  alias_expansion_limit: positiveInt(DEFAULT_ALIAS_EXPANSION_LIMIT),
  /**
   * Delays between the runs of recipients delivery defers (an alias over
   * ALIAS_EXPANSION_LIMIT, a mailbox it cannot write to), as outbound-relay's
   * OUTBOUND_RETRY_SCHEDULE by default; after the last one, its value repeats. Each delay
   * is a delay queue `delivery.retry.<d>` (declared at start).
   */
  delivery_retry_schedule: durationList(DEFAULT_OUTBOUND_RETRY_SCHEDULE_MS),
  /**
   * A deferred recipient whose message is older than MAXIMAL_QUEUE_LIFETIME is returned
   * to the sender (4.6.0, 4.2.0); one older than DELAY_WARNING_TIME is warned of, once.
   */
  ...queueLifetimeSchema,
  /** Folder for mail the policy service holds as spam (quarantine). */
  junk_folder: z.string().min(1).default('Junk'),
  /** Folder for bulk/advertising mail marked by the policy service; INBOX leaves it there (e.g. Promotions). */
  bulk_folder: z.string().min(1).default('INBOX'),
  ...directoryCacheSchema,
  ...quotaSchema,
});
export type DeliveryConfig = z.infer<typeof deliverySchema>;
