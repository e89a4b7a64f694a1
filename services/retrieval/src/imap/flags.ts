/** The system flags a mailbox always offers (RFC 9051 §2.3.2), as FLAGS lists them. */
export const SYSTEM_FLAGS = ['\\Answered', '\\Flagged', '\\Deleted', '\\Seen', '\\Draft'];

/**
 * The longest keyword a message can be given, as Dovecot's mail_max_keyword_length: every
 * keyword a mailbox has is listed in each FLAGS and PERMANENTFLAGS it sends, and kept in
 * the mailbox's keyword file for good.
 */
export const MAX_KEYWORD_LENGTH = 50;
