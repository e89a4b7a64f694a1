/** The system flags a mailbox always offers (RFC 9051 §2.3.2), as FLAGS lists them. */
export const SYSTEM_FLAGS = ['\\Answered', '\\Flagged', '\\Deleted', '\\Seen', '\\Draft'];
