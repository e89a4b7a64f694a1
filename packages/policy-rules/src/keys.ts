import type { RestrictionListName } from './restrictions.js';

/**
 * Redis keys of the policy data (under the installation's REDIS_PREFIX). Renaming
 * one is a migration: running instances and stored rules use these names.
 */
export const PolicyKeys = {
  /** LIST of restriction entries of one list. */
  restrictions: (list: RestrictionListName) => `policy:restrictions:${list}`,
  /** Counter bumped on every rule change; instances compare it to reload. */
  version: 'policy:version',
  /** Pub/sub channel (prefixed by hand: ioredis does not prefix channels). */
  changedChannel: (prefix: string) => `${prefix}policy:changed`,
  /**
   * HASH instance id → JSON of that policy service instance's check settings (mynetworks,
   * relay domains, greylisting...), set when it starts and removed when it stops: an
   * intake decides cheap stages itself, with the same settings, only while one is there.
   */
  engineConfig: 'policy:engine-config',
  /** HASH key → action. */
  access: (table: string) => `policy:access:${table}`,
  /** SET of senders (address, domain) a user allows / blocks. */
  userList: (account: string, kind: 'allow' | 'block') => `policy:user:${account.toLowerCase()}:${kind}`,
  /** STRING JSON of a refused/held transaction's reasons, with a TTL. */
  explain: (id: string) => `policy:explain:${id}`,
  greylistTriplet: (hash: string) => `policy:grey:t:${hash}`,
  greylistClient: (net: string) => `policy:grey:c:${net}`,
  /** A sender domain whose mail passed with SPF or DKIM authentication before. */
  greylistAuthenticated: (domain: string) => `policy:grey:a:${domain.toLowerCase()}`,
  rate: (counter: string, key: string) => `policy:rate:${counter}:${key}`,
} as const;
