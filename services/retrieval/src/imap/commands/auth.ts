// Commands of any state and of the not-authenticated state (RFC 9051 §6.1, §6.2):
// capabilities, logging in, TLS, logging out.
import { ImapReply, reply } from '../replies.js';
import { none } from './args.js';
import { ANY, NOAUTH, command, type CommandGroup } from './command.js';

export const authCommands: CommandGroup = {
  CAPABILITY: command({
    states: ANY,
    parse: none,
    async run(s, tag) {
      s.send(`* CAPABILITY ${s.capabilities()}\r\n`);
      await s.ok(tag, 'CAPABILITY completed');
    },
  }),
  NOOP: command({
    states: ANY,
    parse: none,
    run: (s, tag) => s.ok(tag, 'NOOP completed'),
  }),
  LOGOUT: command({
    states: ANY,
    parse: none,
    async run(s, tag) {
      s.logout(`* BYE Logging out\r\n${tag} OK LOGOUT completed\r\n`);
    },
  }),
  STARTTLS: command({
    states: NOAUTH,
    takesInput: true,
    parse: none,
    async run(s, tag) {
      if (s.conn.secure) throw reply.bad('TLS already active');
      s.send(`${tag} OK Begin TLS negotiation now\r\n`);
      await s.startTls();
    },
  }),
  LOGIN: command({
    states: NOAUTH,
    parse: (r) => {
      const user = r.astring('user name');
      const pass = r.astring('password');
      r.end();
      return { user, pass };
    },
    async run(s, tag, a) {
      await s.login(a.user, a.pass);
      s.send(`${tag} OK [CAPABILITY ${s.capabilities()}] Logged in\r\n`);
    },
  }),
  AUTHENTICATE: command({
    states: NOAUTH,
    takesInput: true,
    parse: (r) => {
      const mech = r.atom('mechanism').toUpperCase();
      const ir = r.remaining ? r.astring('initial response') : null;
      r.end();
      return { mech, ir };
    },
    async run(s, tag, a) {
      if (a.mech !== 'PLAIN') throw new ImapReply('NO', 'CANNOT', 'Unsupported mechanism');
      if (!s.plaintextAllowed()) throw reply.privacyRequired();
      await s.startSasl(tag, a.ir);
    },
  }),
};
