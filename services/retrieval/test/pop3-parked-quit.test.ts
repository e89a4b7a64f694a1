// A POP3 QUIT that waits behind answers the client has not read yet ("parked") must not
// run once the session has been closed meanwhile: the client was told -ERR, so nothing
// it marked with DELE may be deleted (RFC 1939 §6: only QUIT enters the UPDATE state).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { after, before, it } from 'node:test';
import { serverSide, waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, sampleMessage, sendRaw, startRetrieval, type Retrieval } from './helpers.js';

/** The server's own limit of answers waiting for a client (connection.ts OUTPUT_LIMIT). */
const OUTPUT_LIMIT = 1 << 20;
const USER = 'parked@example.test';

let p: Platform;
let r: Retrieval | undefined;
before(async () => {
  p = await startPlatform();
  await addAccount(p.directory, USER);
  await sendRaw(p, USER, sampleMessage(1));
  await sendRaw(p, USER, sampleMessage(2));
  r = await startRetrieval(p, { shutdown_grace: '10s' });
});
after(async () => {
  await r?.stop();
  await p?.close();
});

/** Reads the client socket into one string; `until` resolves when a pattern has arrived. */
function reader(c: Socket) {
  let text = '';
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  c.on('data', (d: Buffer) => {
    text += d.toString('latin1');
    for (const w of waiters.splice(0)) {
      if (w.re.test(text)) w.resolve();
      else waiters.push(w);
    }
  });
  return {
    get text() {
      return text;
    },
    until: (re: RegExp) =>
      re.test(text) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ re, resolve })),
  };
}

it(
  'a pipelined QUIT parked behind unread answers deletes nothing once shutdown has said -ERR',
  { timeout: 120_000 },
  async () => {
    const port = r!.ports.pop3;
    const c = connect(port, '127.0.0.1');
    await once(c, 'connect');
    const rd = reader(c);
    await rd.until(/^\+OK .*\r\n/);
    c.write(`USER ${USER}\r\nPASS ${PASSWORD}\r\n`);
    await rd.until(/\+OK Logged in, 2 messages\r\n/);
    c.write('DELE 1\r\n');
    await rd.until(/\+OK Message 1 deleted\r\n$/);
    const mark = rd.text.length;
    c.write('CAPA\r\n');
    await rd.until(/\r\n\.\r\n$/);
    // one CAPA's answer, from its +OK to the terminating dot
    const capaLen = rd.text.length - mark;
    // how much of the answers waits for the client to read, to wait on
    const s = serverSide(c);

    // the client stops reading; CAPAs pile up answers until more than the server's limit
    // waits for it, each batch small enough that the server runs all of it (it checks for
    // a backed-up client before each command): the queue is empty, the output backed up
    c.pause();
    while (s.writableLength < OUTPUT_LIMIT) {
      const batch = Math.max(1, Math.floor((OUTPUT_LIMIT - s.writableLength) / capaLen));
      const target = s.bytesWritten + batch * capaLen;
      c.write('CAPA\r\n'.repeat(batch));
      await waitFor(() => s.bytesWritten >= target, { what: `${batch} CAPA answers`, intervalMs: 5 });
    }
    // QUIT arrives while those answers wait: it is parked until the client reads
    const read = s.bytesRead;
    c.write('QUIT\r\n');
    await waitFor(() => s.bytesRead >= read + 6, { what: 'QUIT received', intervalMs: 5 });

    const stopped = r!.stop();
    r = undefined;
    // the goodbye is queued behind the unread answers; the client reads them all now
    const ended = once(c, 'end');
    c.resume();
    await ended;
    await stopped;
    c.destroy();

    assert.match(rd.text, /-ERR \[SYS\/TEMP\] Server shutting down\r\n$/);
    assert.doesNotMatch(rd.text, /\+OK Logging out/);
    // the message marked with DELE is still there, for the next session
    const again = await startRetrieval(p);
    try {
      const q = connect(again.ports.pop3, '127.0.0.1');
      const qr = reader(q);
      await qr.until(/^\+OK .*\r\n/);
      q.write(`USER ${USER}\r\nPASS ${PASSWORD}\r\nSTAT\r\nQUIT\r\n`);
      await qr.until(/\+OK Logging out.*\r\n/);
      assert.match(qr.text, /\+OK 2 \d+\r\n/);
      q.destroy();
    } finally {
      await again.stop();
    }
    assert.equal(p.inbox(USER).length, 2);
  },
);
