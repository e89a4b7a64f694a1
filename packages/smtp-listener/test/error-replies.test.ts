// Every error reply reaches the error-reply metric, temporary ones too: a 451 for a
// refused recipient and the 421 that ends a session over the hard error limit.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, test } from 'node:test';
import { waitFor } from '@mailyard/testkit';
import type { MailyardSmtpServer } from '../src/index.js';
import { startListener } from './helpers.js';

let server: MailyardSmtpServer;
let port: number;
const codes: number[] = [];

before(async () => {
  ({ server, port } = await startListener({
    hardErrorLimit: 3,
    hideSTARTTLS: true,
    onRcptTo(address, _session, cb) {
      const err = Object.assign(new Error('4.3.0 Try again later'), { responseCode: 451 });
      cb(address.address.startsWith('later@') ? err : null);
    },
    onErrorReply: (code) => codes.push(code),
  }));
});
after(() => new Promise<void>((resolve) => server.close(() => resolve())));

test('451 and the closing 421 are counted with the 5xx replies', { timeout: 20_000 }, async () => {
  const socket = connect(port, '127.0.0.1');
  let text = '';
  socket.on('data', (d: Buffer) => (text += d.toString()));
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  /** The code of the n-th final reply line (`NNN ` rather than `NNN-`). */
  const reply = (n: number) =>
    waitFor(() => [...text.matchAll(/^(\d{3}) /gm)][n]?.[1], { what: `reply ${n}` }).then(Number);
  assert.equal(await reply(0), 220);
  socket.write('EHLO client.test\r\n');
  assert.equal(await reply(1), 250);
  socket.write('MAIL FROM:<a@client.test>\r\n');
  assert.equal(await reply(2), 250);
  socket.write('RCPT TO:<later@here.test>\r\n');
  assert.equal(await reply(3), 451);
  socket.write('NOSUCHCOMMAND\r\n');
  assert.ok((await reply(4)) >= 500);
  socket.write('NOSUCHCOMMAND\r\n');
  assert.ok((await reply(5)) >= 500);
  assert.equal(await reply(6), 421);
  await closed;
  assert.equal(codes[0], 451);
  assert.equal(codes.at(-1), 421);
  assert.equal(codes.filter((c) => c >= 500).length, 2, codes.join(' '));
});
