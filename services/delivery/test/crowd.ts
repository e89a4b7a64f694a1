import { after, before } from 'node:test';
import { connect, type Channel, type ChannelModel } from 'amqplib';
import { ENVELOPE_HEADER, Queues, type Envelope } from '@mailyard/contracts';
import type { Directory } from '@mailyard/directory';
import { createLogger } from '@mailyard/observability';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';

/**
 * Two aliases around an ALIAS_EXPANSION_LIMIT of 10: `team@example.test` right at it
 * (8 accounts and 2 external addresses), `crowd@example.test` over it (the team counted
 * by its 10 members, 3 more external addresses and dora's account: 14).
 */
export const team = Array.from({ length: 8 }, (_, i) => `t${i}@example.test`);
export const teamRemote = ['zz-1@far-away.test', 'zz-2@far-away.test'];
// sorted before the team's external members: the run that expands the crowd at last must
// not skip them for the record of how far the team's were queued
export const crowdRemote = ['aa-1@far-away.test', 'aa-2@far-away.test', 'aa-3@far-away.test'];

/** The accounts (dora and the team) and both aliases. */
export async function addCrowd(directory: Directory): Promise<void> {
  for (const a of ['dora@example.test', ...team]) await addAccount(directory, a);
  await directory.addAlias('team@example.test', [...team, ...teamRemote]);
  await directory.addAlias('crowd@example.test', ['team@example.test', ...crowdRemote, 'dora@example.test']);
}

/** A message to the crowd from a remote sender. */
export const crowdMail = Buffer.from(
  'From: sender@remote.test\r\nTo: crowd@example.test\r\nSubject: all\r\n\r\nHello\r\n',
);

/** A line delivery logged. */
export interface Line {
  level: number;
  msg: string;
  [field: string]: unknown;
}

export interface CrowdPlatform {
  p: Platform;
  /** Delivery's log lines (at info), in order. */
  lines: Line[];
  /** A channel of the test's own on the platform's vhost. */
  ch: Channel;
  /** Takes every message in `outbound` now: the recipients of each. */
  takeOutbound(): Promise<string[][]>;
  /** Takes every message in `outbound` now: the envelope of each. */
  takeOutboundEnvelopes(): Promise<Envelope[]>;
  close(): Promise<void>;
}

/** A platform with the crowd (addCrowd), delivery started with `delivery` and its lines kept. */
export async function startCrowd(delivery: Record<string, unknown>): Promise<CrowdPlatform> {
  const lines: Line[] = [];
  const p = await startPlatform({
    delivery,
    deliveryLogger: createLogger('delivery', 'info', {
      write: (line: string) => void lines.push(JSON.parse(line) as Line),
    }),
  });
  let conn: ChannelModel | undefined;
  try {
    await addCrowd(p.directory);
    conn = await connect(p.vhost.url);
    const ch = await conn.createChannel();
    const takeOutboundEnvelopes = async () => {
      const out: Envelope[] = [];
      for (let m; (m = await ch.get(Queues.outbound, { noAck: true }));)
        out.push(JSON.parse(String(m.properties.headers?.[ENVELOPE_HEADER])) as Envelope);
      return out;
    };
    return {
      p,
      lines,
      ch,
      takeOutboundEnvelopes,
      async takeOutbound() {
        return (await takeOutboundEnvelopes()).map((e) => e.recipients);
      },
      async close() {
        await conn?.close();
        await p.close();
      },
    };
  } catch (err) {
    await conn?.close();
    await p.close();
    throw err;
  }
}

/**
 * The crowd's platform (startCrowd) for the tests of a file: started before them, closed
 * after them; its fields are there once the first test runs.
 */
export function crowdForTests(delivery: Record<string, unknown>): CrowdPlatform {
  const t = {} as CrowdPlatform;
  before(async () => void Object.assign(t, await startCrowd(delivery)));
  after(() => t.close?.());
  return t;
}
