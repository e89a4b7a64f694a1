// Who gets in: a failing backend is a temporary failure; wrong passwords lock the address
// that sent them, not the account; a revoked app password ends its sessions; limits per
// client address; clients that never log in are cut off.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { ImapFlow } from 'imapflow';
import { AppPasswords } from '@mailyard/auth';
import { startPrivateRedis, waitFor, type PrivateRedis } from '@mailyard/testkit';
import { addAccount, runMailyard, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, startRetrieval, type Retrieval } from './helpers.js';
import { RawImap } from './raw-imap.js';

let p: Platform;
/** Every client socket a test opened, closed after it whatever happened (a service stops only once its clients are gone). */
const open: { close(): void }[] = [];

before(async () => {
  p = await startPlatform();
});
afterEach(() => {
  for (const c of open.splice(0)) c.close();
});
after(async () => {
  await p?.close();
});

async function connect(port: number, from: string): Promise<RawImap> {
  const c = await RawImap.connect(port, { localAddress: from });
  open.push(c);
  return c;
}

/** An IMAP session from `from` (a 127.0.0.x address) that answered its greeting. */
async function imap(port: number, from = '127.0.0.1'): Promise<RawImap> {
  const c = await connect(port, from);
  await c.until(/^\* OK/m);
  return c;
}

/** A POP3 session from `from` that answered its greeting. */
async function pop3(port: number, from = '127.0.0.1'): Promise<RawImap> {
  const c = await connect(port, from);
  await c.until(/^\+OK/m);
  return c;
}

async function pop3Login(c: RawImap, user: string, password: string): Promise<string> {
  c.send(`USER ${user}\r\n`);
  await c.until(/^(\+OK|-ERR)/m);
  c.send(`PASS ${password}\r\n`);
  return c.until(/^(\+OK|-ERR)/m);
}

void describe('a failing backend during login', () => {
  const USER = 'backend@example.test';
  let failing: PrivateRedis;
  let r: Retrieval;
  before(async () => {
    await addAccount(p.directory, USER);
    failing = await startPrivateRedis();
    r = await startRetrieval(p, { plaintext_auth_networks: '127.0.0.0/8' }, { guardRedis: failing.client() });
    // the lockout cannot be read or counted; the accounts (on the shared Redis) can
    await failing.refuse(['pttl', 'get', 'mget', 'incr', 'set']);
  });
  after(async () => {
    await r?.stop();
    await failing?.close();
  });

  void it('IMAP: NO [UNAVAILABLE] for the right password and a wrong one', { timeout: 20_000 }, async () => {
    const c = await imap(r.ports.imap);
    assert.match(await c.cmd('a', `LOGIN ${USER} "${PASSWORD}"`), /^a NO \[UNAVAILABLE\] /m);
    assert.match(await c.cmd('b', `LOGIN ${USER} wrong`), /^b NO \[UNAVAILABLE\] /m);
    const b64 = Buffer.from(`\0${USER}\0${PASSWORD}`).toString('base64');
    assert.match(await c.cmd('c', `AUTHENTICATE PLAIN ${b64}`), /^c NO \[UNAVAILABLE\] /m);
  });

  void it('POP3: -ERR [SYS/TEMP] for the right password and a wrong one', { timeout: 20_000 }, async () => {
    const c = await pop3(r.ports.pop3);
    assert.match(await pop3Login(c, USER, PASSWORD), /^-ERR \[SYS\/TEMP\] /m);
    assert.match(await pop3Login(c, USER, 'wrong'), /^-ERR \[SYS\/TEMP\] /m);
  });
});

void describe('wrong passwords lock the address that sent them, not the account', () => {
  const IMAPUSER = 'imap-victim@example.test';
  const POPUSER = 'pop-victim@example.test';
  let r: Retrieval;
  before(async () => {
    for (const u of [IMAPUSER, POPUSER]) await addAccount(p.directory, u);
    r = await startRetrieval(p, { plaintext_auth_networks: '127.0.0.0/8' });
  });
  after(() => r?.stop());

  void it(
    'IMAP: five wrong from 127.0.0.2, then the right one from 127.0.0.3 logs in',
    { timeout: 30_000 },
    async () => {
      const guesser = await imap(r.ports.imap, '127.0.0.2');
      for (let i = 0; i < 5; i++)
        assert.match(
          await guesser.cmd(`g${i}`, `LOGIN ${IMAPUSER} wrong${i}`),
          /NO \[AUTHENTICATIONFAILED\]/,
        );
      assert.match(await guesser.cmd('g9', `LOGIN ${IMAPUSER} "${PASSWORD}"`), /^g9 NO \[UNAVAILABLE\] /m);
      const owner = await imap(r.ports.imap, '127.0.0.3');
      assert.match(await owner.cmd('o', `LOGIN ${IMAPUSER} "${PASSWORD}"`), /^o OK /m);
    },
  );

  void it(
    'POP3: five wrong from 127.0.0.2, then the right one from 127.0.0.3 logs in',
    { timeout: 30_000 },
    async () => {
      for (let i = 0; i < 5; i++) {
        // a client gets one PASS per USER; several sessions, as a guesser would
        const g = await pop3(r.ports.pop3, '127.0.0.2');
        assert.match(await pop3Login(g, POPUSER, `wrong${i}`), /^-ERR \[AUTH\] Authentication failed/m);
      }
      const g = await pop3(r.ports.pop3, '127.0.0.2');
      assert.match(await pop3Login(g, POPUSER, PASSWORD), /^-ERR \[AUTH\] Too many failed logins/m);
      const owner = await pop3(r.ports.pop3, '127.0.0.3');
      assert.match(await pop3Login(owner, POPUSER, PASSWORD), /^\+OK Logged in/m);
    },
  );
});

void describe('Redis full (maxmemory): wrong passwords still count and lock, the owner gets in', () => {
  const IMAPUSER = 'full-imap@example.test';
  const POPUSER = 'full-pop@example.test';
  const ATTACKED = 'full-attacked@example.test';
  let full: PrivateRedis;
  let r: Retrieval;
  before(async () => {
    for (const u of [IMAPUSER, POPUSER, ATTACKED]) await addAccount(p.directory, u);
    // the lockout on a Redis of its own at its maxmemory; the accounts (on the shared Redis) are read
    full = await startPrivateRedis();
    r = await startRetrieval(p, { plaintext_auth_networks: '127.0.0.0/8' }, { guardRedis: full.client() });
  });
  after(async () => {
    await r?.stop();
    await full?.close();
  });

  void it(
    'IMAP and POP3: five wrong from one address lock it, the right one from another logs in',
    { timeout: 60_000 },
    async () => {
      await full.whileFull(async () => {
        // a wrong password is told as one, not as a temporary failure a guesser could tell apart
        const guesser = await imap(r.ports.imap, '127.0.0.2');
        for (let i = 0; i < 5; i++)
          assert.match(
            await guesser.cmd(`g${i}`, `LOGIN ${IMAPUSER} wrong${i}`),
            /^g\d NO \[AUTHENTICATIONFAILED\] /m,
          );
        assert.match(await guesser.cmd('g9', `LOGIN ${IMAPUSER} "${PASSWORD}"`), /^g9 NO \[UNAVAILABLE\] /m);
        const owner = await imap(r.ports.imap, '127.0.0.3');
        assert.match(await owner.cmd('o', `LOGIN ${IMAPUSER} "${PASSWORD}"`), /^o OK /m);

        for (let i = 0; i < 5; i++) {
          const g = await pop3(r.ports.pop3, '127.0.0.4');
          assert.match(await pop3Login(g, POPUSER, `wrong${i}`), /^-ERR \[AUTH\] Authentication failed/m);
        }
        const g = await pop3(r.ports.pop3, '127.0.0.4');
        assert.match(await pop3Login(g, POPUSER, PASSWORD), /^-ERR \[AUTH\] Too many failed logins/m);
        const popOwner = await pop3(r.ports.pop3, '127.0.0.5');
        assert.match(await pop3Login(popOwner, POPUSER, PASSWORD), /^\+OK Logged in/m);
      });
    },
  );

  void it(
    'IMAP: an account under attack from 19 addresses; its owner, who mistyped once, logs in',
    { timeout: 60_000 },
    async () => {
      await full.whileFull(async () => {
        const owner = await imap(r.ports.imap, '127.0.0.6');
        assert.match(await owner.cmd('t', `LOGIN ${ATTACKED} typo`), /^t NO \[AUTHENTICATIONFAILED\] /m);
        // 20 failures in all: the account is under attack, and the owner's address failed for it
        for (let i = 0; i < 19; i++) {
          const c = await imap(r.ports.imap, `127.0.1.${i + 1}`);
          assert.match(await c.cmd('g', `LOGIN ${ATTACKED} guess`), /^g NO \[AUTHENTICATIONFAILED\] /m);
          c.close();
        }
        assert.match(await owner.cmd('o', `LOGIN ${ATTACKED} "${PASSWORD}"`), /^o OK /m);
      });
    },
  );
});

void describe('a revoked app password ends its sessions', () => {
  const USER = 'revoked@example.test';
  let r: Retrieval;
  before(async () => {
    await addAccount(p.directory, USER);
    r = await startRetrieval(p, { plaintext_auth_networks: '127.0.0.0/8' });
  });
  after(() => r?.stop());

  void it(
    '`mailyard app-password revoke` ends an IDLE session (imapflow) and a POP3 session within seconds; the password session stays',
    { timeout: 60_000 },
    async () => {
      const secret = await new AppPasswords(p.redis.redis).create(USER, 'phone');
      const client = new ImapFlow({
        host: '127.0.0.1',
        port: r.ports.imap,
        secure: false,
        doSTARTTLS: false,
        auth: { user: USER, pass: secret },
        logger: false,
      });
      open.push({ close: () => client.close() });
      let closed = false;
      client.on('close', () => (closed = true));
      client.on('error', () => undefined);
      await client.connect();
      await client.mailboxOpen('INBOX');
      const idling = client.idle();
      const popper = await pop3(r.ports.pop3);
      assert.match(await pop3Login(popper, USER, secret), /^\+OK Logged in/m);
      const owner = await imap(r.ports.imap);
      assert.match(await owner.cmd('o', `LOGIN ${USER} "${PASSWORD}"`), /^o OK /m);

      await runMailyard(p, ['app-password', 'revoke', USER, 'phone']);
      await waitFor(() => closed, { timeoutMs: 10_000, what: 'the IDLE session to end' });
      await idling.catch(() => undefined);
      assert.match(await popper.until(/^-ERR/m, 10_000), /^-ERR \[AUTH\] .*revoked/m);
      await popper.waitClosed();
      // the session that logged in with the account password goes on
      assert.match(await owner.cmd('n', 'NOOP'), /^n OK /m);
      // and the revoked app password logs in no more, though a login with it was just cached
      const again = await imap(r.ports.imap, '127.0.0.9');
      assert.match(await again.cmd('a', `LOGIN ${USER} ${secret}`), /^a NO \[AUTHENTICATIONFAILED\] /m);
    },
  );
});

void describe('per-client limits', () => {
  const USER = 'limited@example.test';
  let r: Retrieval;
  let other: Retrieval;
  before(async () => {
    await addAccount(p.directory, USER);
    const limits = {
      plaintext_auth_networks: '127.0.0.0/8',
      mail_max_ip_connections: 3,
      mail_max_ip_connection_rate: 8,
      mail_ip_limit_exceptions: '127.0.0.1/32',
      mail_max_user_connections: 1,
    };
    r = await startRetrieval(p, limits);
    other = await startRetrieval(p, limits);
  });
  after(async () => {
    await r?.stop();
    await other?.stop();
  });

  void it(
    'IMAP and POP3 together: past mail_max_ip_connections, BYE and -ERR [SYS/TEMP]; another address still gets in',
    { timeout: 30_000 },
    async () => {
      for (let i = 0; i < 3; i++) await imap(r.ports.imap, '127.0.0.30');
      const over = await connect(r.ports.imap, '127.0.0.30');
      assert.match(await over.until(/^\* (OK|BYE)/m), /^\* BYE \[UNAVAILABLE\] Too many connections/m);
      await over.waitClosed();
      const pop = await connect(r.ports.pop3, '127.0.0.30');
      assert.match(await pop.until(/^(\+OK|-ERR)/m), /^-ERR \[SYS\/TEMP\] Too many connections/m);
      await pop.waitClosed();
      await imap(r.ports.imap, '127.0.0.31');
      await pop3(r.ports.pop3, '127.0.0.31');
      // an exception is not counted
      for (let i = 0; i < 5; i++) await imap(r.ports.imap, '127.0.0.1');
    },
  );

  void it(
    'connections at once from one address are counted over every instance',
    { timeout: 30_000 },
    async () => {
      const from = '127.0.0.33';
      const slots = `slots:retrieval:ip:${from}`;
      const first = await imap(r.ports.imap, from);
      await imap(other.ports.imap, from);
      await pop3(other.ports.pop3, from);
      // one session on r, two on the other: the limit of 3 is theirs together
      const over = await connect(r.ports.imap, from);
      assert.match(
        await over.until(/^\* (OK|BYE)/m),
        /^\* BYE \[UNAVAILABLE\] Too many connections from your address/m,
      );
      await over.waitClosed();
      const overPop = await connect(other.ports.pop3, from);
      assert.match(await overPop.until(/^(\+OK|-ERR)/m), /^-ERR \[SYS\/TEMP\] Too many connections/m);
      await overPop.waitClosed();
      // closed on r: free on the other instance once r has given the slot back
      first.close();
      await waitFor(async () => (await p.redis.redis.zcard(slots)) === 2, { what: 'the slot given back' });
      await imap(other.ports.imap, from);
    },
  );

  void it('sessions of one account are counted over every instance', { timeout: 30_000 }, async () => {
    const first = await imap(r.ports.imap, '127.0.0.34');
    assert.match(await first.cmd('a', `LOGIN ${USER} "${PASSWORD}"`), /^a OK/m);
    const second = await imap(other.ports.imap, '127.0.0.35');
    assert.match(await second.cmd('b', `LOGIN ${USER} "${PASSWORD}"`), /^b NO \[LIMIT\]/m);
    first.close();
    await waitFor(async () => (await p.redis.redis.zcard(`slots:retrieval:account:${USER}`)) === 0, {
      what: 'the session given back',
    });
    assert.match(await second.cmd('c', `LOGIN ${USER} "${PASSWORD}"`), /^c OK/m);
  });

  void it('the connection rate is counted over every instance', { timeout: 30_000 }, async () => {
    const replies: string[] = [];
    // the counts are per minute of the clock: a minute may turn during the test
    while (replies.length < 17 && !replies.at(-1)?.startsWith('* BYE')) {
      const c = await connect((replies.length % 2 ? other : r).ports.imap, '127.0.0.32');
      replies.push(await c.until(/^\* (OK|BYE)/m));
      c.close();
    }
    assert.match(replies.at(-1)!, /^\* BYE \[UNAVAILABLE\] Too many connections/);
    assert.ok(replies.length > 8, `refused after ${replies.length - 1}`);
  });
});

void describe('clients that do not log in are cut off', () => {
  const USER = 'slow@example.test';
  let r: Retrieval;
  before(async () => {
    await addAccount(p.directory, USER);
    r = await startRetrieval(p, {
      plaintext_auth_networks: '127.0.0.0/8',
      // a client kept busy writes every 300 ms: seconds between two of its lines are
      // plenty, even on a busy machine
      login_idle_timeout: '2s',
      login_timeout: '5s',
    });
  });
  after(() => r?.stop());

  /** Sends `line` every 300 ms until the server says `until` (or 15 s pass); returns what it said. */
  async function keepBusy(c: RawImap, line: () => string, until: RegExp): Promise<string> {
    const started = Date.now();
    let out = '';
    while (!until.test(out) && !c.closed && Date.now() - started < 15_000) {
      c.send(line());
      out += await c.until(/\r\n/, 5000).catch(() => '');
      await new Promise((res) => setTimeout(res, 300));
    }
    return out + (await c.until(until, 1000).catch(() => ''));
  }

  void it(
    'IMAP: idle before login, BYE after login_idle_timeout (not the 30 min autologout)',
    { timeout: 30_000 },
    async () => {
      const c = await imap(r.ports.imap);
      assert.match(await c.until(/^\* BYE/m, 10_000), /^\* BYE Autologout/m);
      await c.waitClosed();
    },
  );

  void it('IMAP: busy but never logging in, BYE after login_timeout', { timeout: 30_000 }, async () => {
    const c = await imap(r.ports.imap);
    let n = 0;
    assert.match(await keepBusy(c, () => `n${++n} NOOP\r\n`, /^\* BYE/m), /^\* BYE Not logged in in time/m);
    await c.waitClosed();
  });

  void it('POP3: idle before login, then busy before login, cut both ways', { timeout: 30_000 }, async () => {
    const idle = await pop3(r.ports.pop3);
    assert.match(await idle.until(/^-ERR/m, 10_000), /^-ERR Autologout/m);
    const busy = await pop3(r.ports.pop3);
    assert.match(
      await keepBusy(busy, () => 'USER someone@example.test\r\n', /^-ERR Not logged/m),
      /^-ERR Not logged in in time/m,
    );
    await busy.waitClosed();
  });

  void it('IMAP: once logged in, neither limit applies', { timeout: 30_000 }, async () => {
    const c = await imap(r.ports.imap);
    assert.match(await c.cmd('l', `LOGIN ${USER} "${PASSWORD}"`), /^l OK /m);
    // idle longer than login_idle_timeout, then busy past login_timeout
    await new Promise((res) => setTimeout(res, 2500));
    const started = Date.now();
    for (let i = 0; Date.now() - started < 5500; i++) {
      assert.match(await c.cmd(`k${i}`, 'NOOP'), new RegExp(`^k${i} OK`, 'm'));
      await new Promise((res) => setTimeout(res, 300));
    }
  });
});
