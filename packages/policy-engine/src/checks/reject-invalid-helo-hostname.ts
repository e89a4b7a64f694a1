import { ipToBigInt } from '@mailyard/config';
import { normalizeDomain } from '@mailyard/smtp-core';
import { DUNNO, note, refuse, type CheckImplementation } from '../check-context.js';

/** `reject_invalid_helo_hostname`: a HELO that is neither a domain name nor an address literal. */
export const rejectInvalidHeloHostname: CheckImplementation<'reject_invalid_helo_hostname'> = {
  run(ctx, _args, reply) {
    const { req } = ctx;
    const helo = req.client.helo;
    if (req.stage === 'connect') return DUNNO;
    // RFC 5321 §4.1.3: an address literal, [192.0.2.1] or [IPv6:2001:db8::1]
    const literal =
      /^\[(?:IPv6:)?[0-9A-Fa-f:.]+\]$/.test(helo) && ipToBigInt(helo.slice(1, -1).replace(/^IPv6:/i, ''));
    if (helo && (literal || normalizeDomain(helo))) return DUNNO;
    note(ctx, 'reject_invalid_helo_hostname', 'reject', helo);
    return refuse(reply.invalidHelo(helo));
  },
};
