// The first logins of an account create its default folders and subscriptions; several
// at once (a client opening a connection per folder, the webmail's pool) must all be
// answered.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, startRetrieval, type Retrieval } from './helpers.js';
import { RawImap } from './raw-imap.js';

let p: Platform;
let r: Retrieval;
before(async () => {
  p = await startPlatform({ withDelivery: false });
  r = await startRetrieval(p);
});
after(async () => {
  await r?.stop();
  await p?.close();
});

test('simultaneous first logins with AUTHENTICATE PLAIN are all answered', { timeout: 60_000 }, async () => {
  for (let round = 0; round < 5; round++) {
    const user = `first${round}@example.test`;
    await addAccount(p.directory, user);
    const b64 = Buffer.from(`\0${user}\0${PASSWORD}`).toString('base64');
    const results = await Promise.all(
      [1, 2, 3, 4].map(async () => {
        const c = await RawImap.connect(r.ports.imaps, { tls: true });
        try {
          await c.until(/^\* OK/m);
          c.send('a AUTHENTICATE PLAIN\r\n');
          await c.until(/^\+/m);
          c.send(`${b64}\r\n`);
          return await c.until(/^a (OK|NO|BAD)/m, 10_000);
        } finally {
          c.socket.destroy();
        }
      }),
    );
    for (const out of results) assert.match(out, /^a OK /m);
  }
});
