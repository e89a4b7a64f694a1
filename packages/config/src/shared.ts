import { z } from 'zod';

// Settings that several services must agree on, each declared once. A service schema
// spreads the fragment it needs, so the key, its environment variable, its default
// and its validation cannot differ from one service to the next.

/** Recipient addressing: every service that resolves recipients (mta-inbound, msa, delivery). */
export const addressingSchema = {
  /**
   * Plus-addressing separator (Postfix: recipient_delimiter): `alice+tag@` is delivered
   * to `alice@`, and alice may send as it. mta-inbound accepts by it and delivery files
   * by it: two values would accept mail that is then not delivered.
   */
  recipient_delimiter: z.string().min(1).max(1).default('+'),
};

/** The mail store: every service that reads or writes the mailboxes (delivery, retrieval). */
export const mailStoreSchema = {
  /** Root of the mailboxes: <root>/<domain>/<local-part>/ is an account's Maildir. */
  maildir_root: z.string().min(1).default('/var/mail/mailyard'),
};
