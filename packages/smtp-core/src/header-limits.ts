import { reply, type SmtpReject } from './replies.js';

/**
 * Limits on a message's header section, checked before anything reads it (the policy's
 * SPF, DKIM and DMARC checks, the submission service's header rules):
 *
 * - Received fields: a message that has passed through more hosts is in a mail loop
 *   (Postfix's hopcount_limit, 50; 554 5.4.6 too many hops). A relay domain or an MX
 *   pointing back here would otherwise pass the message round until it outgrew the size
 *   limit, a Received field each time.
 * - Bytes and lines: 256 KiB (the header limit of Exchange Online) and 5,000 lines. Some
 *   header parsers take time growing with the square of a field's continuation lines: a
 *   header of 40,000 three-byte lines (120 KB) took mailauth 24 s of CPU.
 */
export const HOPCOUNT_LIMIT = 50;
export const HEADER_SIZE_LIMIT = 256 * 1024;
export const HEADER_LINES_LIMIT = 5000;

const LF = 0x0a;

/**
 * The refusal a message's header section earns, or null; `message` has CRLF line ends.
 * The section runs to the first empty line, or to the end of a message without one, as
 * the parsers after us read it (Postfix ends it at the first line that is not a field,
 * but a line of junk first would then hide a header of any size from them).
 */
export function headerRefusal(message: Buffer): SmtpReject | null {
  let hops = 0;
  for (let start = 0, lines = 0; start < message.length; lines++) {
    // an empty line ends the header section
    if (message[start] === 0x0d && message[start + 1] === LF) return null;
    if (start > HEADER_SIZE_LIMIT || lines >= HEADER_LINES_LIMIT) return reply.headerTooLarge();
    if (isReceived(message, start) && ++hops > HOPCOUNT_LIMIT) return reply.tooManyHops();
    const end = message.indexOf(LF, start);
    if (end === -1) break;
    start = end + 1;
  }
  return message.length > HEADER_SIZE_LIMIT ? reply.headerTooLarge() : null;
}

const isReceived = (buf: Buffer, at: number): boolean =>
  buf.toString('latin1', at, at + 9).toLowerCase() === 'received:';
