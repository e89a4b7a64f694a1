// Commands of extensions beyond the base protocol: ID (RFC 2971), ENABLE (RFC 5161),
// NAMESPACE (RFC 2342), IDLE (RFC 2177), COMPRESS (RFC 4978), QUOTA (RFC 9208).
import { holdOnFailure } from '@mailyard/bus';
import { ParseError } from '@mailyard/imap-core';
import type { AuthedContext } from '../context.js';
import { ImapReply, reply } from '../replies.js';
import { highestModseqLine, none, oneMailbox } from './args.js';
import { ANY, AUTHED, command, type CommandGroup } from './command.js';
import { quoteName, requireFolder } from './folders.js';

/** What ENABLE turns on; anything else is ignored and left out of the ENABLED answer (RFC 5161 §3.1). */
const ENABLEABLE = ['CONDSTORE', 'QRESYNC', 'UTF8=ACCEPT', 'IMAP4REV2'];

async function quotaLine(s: AuthedContext): Promise<string> {
  const limit = await holdOnFailure('Redis', s.deps.quotas.limit(s.user));
  if (!limit) return '* QUOTA "" ()';
  const { bytes } = await s.mailbox.usage(limit);
  // RFC 9208 §5.1: STORAGE in units of 1024 octets
  return `* QUOTA "" (STORAGE ${Math.ceil(bytes / 1024)} ${Math.floor(limit / 1024)})`;
}

export const extensionCommands: CommandGroup = {
  ID: command({
    states: ANY,
    parse: (r) => {
      r.next('ID parameters');
      r.end();
    },
    async run(s, tag) {
      s.send('* ID ("name" "Mailyard" "vendor" "Mailyard")\r\n');
      await s.ok(tag, 'ID completed');
    },
  }),
  ENABLE: command({
    states: AUTHED,
    parse: (r) => {
      const caps: string[] = [];
      while (r.remaining) caps.push(r.atom('capability').toUpperCase());
      if (!caps.length) throw new ParseError('ENABLE needs a capability');
      return caps;
    },
    async run(s, tag, caps) {
      // Every extension named that ENABLE turns on is listed, also one already on
      // (whether by an earlier ENABLE or, for CONDSTORE, by QRESYNC): it is on after this
      // command, which is what the client asks, and Dovecot lists it the same way.
      const ok = caps.filter((c) => ENABLEABLE.includes(c));
      const condstoreBefore = s.enabled.condstore;
      for (const c of ok) s.enabled.add(c);
      if (ok.includes('QRESYNC')) s.enabled.add('CONDSTORE');
      if (s.selected && s.enabled.rev2) s.selected.rev2 = true;
      s.send(
        `* ENABLED${ok.length ? ' ' + ok.map((c) => (c === 'IMAP4REV2' ? 'IMAP4rev2' : c)).join(' ') : ''}\r\n`,
      );
      // a CONDSTORE enabling command in the selected state tells the mailbox's
      // HIGHESTMODSEQ, as SELECT would have (RFC 7162 §3.1)
      if (!condstoreBefore && s.enabled.condstore && s.selected) s.send(highestModseqLine(s.selected));
      await s.ok(tag, 'ENABLE completed');
    },
  }),
  NAMESPACE: command({
    states: AUTHED,
    parse: none,
    async run(s, tag) {
      s.send('* NAMESPACE (("" "/")) NIL NIL\r\n');
      await s.ok(tag, 'NAMESPACE completed');
    },
  }),
  IDLE: command({
    states: AUTHED,
    takesInput: true,
    parse: none,
    async run(s, tag) {
      s.startIdle(tag);
    },
  }),
  COMPRESS: command({
    states: AUTHED,
    takesInput: true,
    parse: (r) => {
      const mech = r.atom('mechanism').toUpperCase();
      r.end();
      return mech;
    },
    run(s, tag, mech) {
      // RFC 4978 §3
      if (mech !== 'DEFLATE' || !s.deps.config.imap_compress)
        throw reply.bad(`Unsupported compression mechanism ${mech}`);
      if (s.conn.compressed) throw new ImapReply('NO', 'COMPRESSIONACTIVE', 'DEFLATE active via COMPRESS');
      s.startCompression(tag);
      return Promise.resolve();
    },
  }),
  GETQUOTAROOT: command({
    states: AUTHED,
    parse: oneMailbox,
    async run(s, tag, name) {
      await requireFolder(s, name);
      s.send(`* QUOTAROOT ${quoteName(s, name)} ""\r\n${await quotaLine(s)}\r\n`);
      await s.ok(tag, 'GETQUOTAROOT completed');
    },
  }),
  GETQUOTA: command({
    states: AUTHED,
    parse: (r) => {
      const root = r.astring('quota root');
      r.end();
      return root;
    },
    async run(s, tag, root) {
      if (root !== '') throw new ImapReply('NO', 'NONEXISTENT', 'No such quota root');
      s.send((await quotaLine(s)) + '\r\n');
      await s.ok(tag, 'GETQUOTA completed');
    },
  }),
  SETQUOTA: command({
    states: AUTHED,
    // refused whatever its arguments say
    parse: () => undefined,
    run: async () => {
      throw reply.noPerm('Quotas are set by the administrator');
    },
  }),
};
