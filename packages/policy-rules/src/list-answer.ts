import { RestrictionError } from './restriction-error.js';

/** The answers one octet accepts: inclusive ranges. */
type OctetRanges = readonly (readonly [low: number, high: number])[];

/**
 * Which answers of a DNS list an entry acts on: Postfix's `d.d.d.d` reply filter
 * (postconf(5), reject_rbl_client; patterns since Postfix 2.8). Each octet is a number,
 * or brackets holding `;`-separated numbers and `n..m` ranges: `127.0.0.[2..11]` takes
 * Spamhaus ZEN's listings and none of its other answers, `127.0.0.[2;4;5]` three codes.
 */
export interface ListAnswerFilter {
  /** As written, for the reasons and the replies. */
  readonly text: string;
  /** For each of the four octets, what it accepts. */
  readonly octets: readonly OctetRanges[];
}

const OCTET = String.raw`(\d{1,3}|\[[^\]]*\])`;
const SHAPE = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);

function octetValue(text: string, digits: string): number {
  const n = Number(digits);
  if (!/^\d{1,3}$/.test(digits) || n > 255)
    throw new RestrictionError(`bad list answer "${text}": "${digits}" is not a number from 0 to 255`);
  return n;
}

function parseOctet(text: string, octet: string): OctetRanges {
  if (!octet.startsWith('[')) {
    const n = octetValue(text, octet);
    return [[n, n]];
  }
  return octet
    .slice(1, -1)
    .split(';')
    .map((item) => {
      const m = /^(\d+)(?:\.\.(\d+))?$/.exec(item);
      if (!m)
        throw new RestrictionError(`bad list answer "${text}": "${item}" is not a number or a range n..m`);
      const lo = octetValue(text, m[1]!);
      const hi = m[2] === undefined ? lo : octetValue(text, m[2]);
      if (lo > hi) throw new RestrictionError(`bad list answer "${text}": the range ${item} runs backwards`);
      return [lo, hi] as const;
    });
}

/** Parses a filter; a RestrictionError says in one sentence what is wrong with it. */
export function parseListAnswer(text: string): ListAnswerFilter {
  const m = SHAPE.exec(text);
  if (!m)
    throw new RestrictionError(
      `bad list answer "${text}", expected 127.0.0.N or a pattern such as 127.0.0.[2..11] or 127.0.0.[2;4;5]`,
    );
  const octets = m.slice(1, 5).map((o) => parseOctet(text, o));
  // RFC 5782 §2.1: a list answers in 127.0.0.0/8; a filter for anything else matches no listing
  if (octets[0]!.some(([lo, hi]) => lo !== 127 || hi !== 127))
    throw new RestrictionError(`bad list answer "${text}": DNS lists answer in 127.0.0.0/8`);
  return { text, octets };
}

/** Whether an A record a list answered (dotted quad) passes the filter. */
export function listAnswerMatches(filter: ListAnswerFilter, address: string): boolean {
  const parts = address.split('.');
  if (parts.length !== 4) return false;
  return parts.every((p, i) => {
    const n = Number(p);
    return /^\d{1,3}$/.test(p) && filter.octets[i]!.some(([lo, hi]) => n >= lo && n <= hi);
  });
}
