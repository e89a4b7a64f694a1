import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { buildProxyV2 } from '@mailyard/smtp-listener';
import { amqpFrames, RawSmtp, startTcpProxy, waitFor, type TcpProxy } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';

describe('PROXY protocol', () => {
  let p: Platform;
  let lb: TcpProxy;
  before(async () => {
    // The load balancer runs on 127.0.0.1, which is also in mynetworks: exactly the
    // setup in which a proxy that hides client addresses would make an open relay.
    p = await startPlatform({
      inbound: { mynetworks: '127.0.0.1/32', proxy_protocol_trusted_networks: '127.0.0.1/32' },
    });
    await addAccount(p.directory, 'fay@example.test');
    lb = await startTcpProxy(
      { host: '127.0.0.1', port: p.inbound.port },
      {
        preamble: (client) =>
          buildProxyV2(client.remoteAddress!.replace(/^::ffff:/, ''), client.remotePort!, '127.0.0.1', 25),
      },
    );
  });
  after(async () => {
    await lb.close();
    await p.close();
  });

  test('a client outside mynetworks arriving through the load balancer cannot relay', async () => {
    const c = await RawSmtp.connect(lb.port, '127.0.0.1', { localAddress: '127.0.0.2' });
    assert.equal((await c.read()).code, 220);
    await c.cmd('EHLO outside.example.net');
    await c.cmd('MAIL FROM:<x@remote.test>');
    assert.match((await c.cmd('RCPT TO:<victim@elsewhere.test>')).text, /^554 5\.7\.1 /);
    c.close();
  });

  test('the real client address (v1 header) is what the Received header records', async () => {
    const before = p.inbox('fay@example.test').length;
    const c = await RawSmtp.connect(p.inbound.port, '127.0.0.1', {
      preamble: Buffer.from('PROXY TCP4 198.51.100.23 127.0.0.1 40000 25\r\n'),
    });
    assert.equal((await c.read()).code, 220);
    await c.cmd('EHLO real.example.net');
    await c.cmd('MAIL FROM:<x@remote.test>');
    assert.match((await c.cmd('RCPT TO:<victim@elsewhere.test>')).text, /^554 5\.7\.1 /);
    assert.equal((await c.cmd('RCPT TO:<fay@example.test>')).code, 250);
    await c.cmd('DATA');
    assert.equal((await c.cmd('Subject: via proxy\r\n\r\nhi\r\n.')).code, 250);
    c.close();
    const files = await waitFor(() =>
      p.inbox('fay@example.test').length > before ? p.inbox('fay@example.test') : null,
    );
    assert.ok(files.some((f) => readFileSync(f, 'utf8').includes('[198.51.100.23]')));
  });

  test('an IPv4 client behind a dual-stack load balancer (v2, ::ffff:a.b.c.d) is recorded as its IPv4 address', async () => {
    const before = p.inbox('fay@example.test').length;
    const c = await RawSmtp.connect(p.inbound.port, '127.0.0.1', {
      preamble: buildProxyV2('::ffff:c633:6418', 40000, '2001:db8::25', 25),
    });
    assert.equal((await c.read()).code, 220);
    await c.cmd('EHLO real.example.net');
    await c.cmd('MAIL FROM:<x@remote.test>');
    assert.equal((await c.cmd('RCPT TO:<fay@example.test>')).code, 250);
    await c.cmd('DATA');
    assert.equal((await c.cmd('Subject: via a dual-stack proxy\r\n\r\nhi\r\n.')).code, 250);
    c.close();
    const files = await waitFor(() =>
      p.inbox('fay@example.test').length > before ? p.inbox('fay@example.test') : null,
    );
    assert.ok(files.some((f) => readFileSync(f, 'utf8').includes('[198.51.100.24]')));
  });

  test('a trusted proxy connection whose header carries no client address is refused', async () => {
    const local = Buffer.concat([
      Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]),
      Buffer.from([0x20, 0x00, 0x00, 0x00]),
    ]);
    const c = await RawSmtp.connect(p.inbound.port, '127.0.0.1', { preamble: local });
    assert.match((await c.read()).text, /^421 4\.7\.0 /);
    await c.waitClosed();
  });

  test('a garbage header from the trusted proxy is refused', async () => {
    const c = await RawSmtp.connect(p.inbound.port, '127.0.0.1', {
      preamble: Buffer.from('EHLO not-a-proxy-header\r\n'),
    });
    assert.match((await c.read()).text, /^421 /);
    await c.waitClosed();
  });

  test('a PROXY header from an untrusted peer is never believed', async () => {
    const c = await RawSmtp.connect(p.inbound.port, '127.0.0.1', { localAddress: '127.0.0.2' });
    assert.equal((await c.read()).code, 220);
    const r = await c.cmd('PROXY TCP4 127.0.0.1 127.0.0.1 1234 25');
    assert.ok(r.code >= 500);
    await c.cmd('EHLO outside.example.net');
    await c.cmd('MAIL FROM:<x@remote.test>');
    assert.match((await c.cmd('RCPT TO:<victim@elsewhere.test>')).text, /^554 5\.7\.1 /);
    c.close();
  });
});

describe('broker outage', () => {
  let p: Platform;
  let amqp: TcpProxy;
  before(async () => {
    amqp = await startTcpProxy({ host: '127.0.0.1', port: 5672 }, { amqpFrames: true });
    p = await startPlatform({
      withDelivery: true,
      amqpUrl: (url) => url.replace('127.0.0.1:5672', `127.0.0.1:${amqp.port}`),
    });
    await addAccount(p.directory, 'gus@example.test');
  });
  after(async () => {
    await p.close();
    await amqp.close();
  });

  async function send(subject: string): Promise<string> {
    const c = await RawSmtp.connect(p.inbound.port);
    await c.read();
    await c.cmd('EHLO client.example.net');
    await c.cmd('MAIL FROM:<x@remote.test>');
    await c.cmd('RCPT TO:<gus@example.test>');
    await c.cmd('DATA');
    const r = await c.cmd(`Subject: ${subject}\r\n\r\nhi\r\n.`);
    c.close();
    return r.text;
  }

  test('while RabbitMQ is unreachable MAIL FROM gets 451 4.3.0; after it is back mail flows again', async () => {
    assert.match(await send('before'), /^250 2\.0\.0 /);
    amqp.cut();
    await waitFor(() => !p.inboundRt.bus.connected);
    // refused before the client sends a message the queue could not take
    const c = await RawSmtp.connect(p.inbound.port);
    await c.read();
    await c.cmd('EHLO client.example.net');
    assert.match((await c.cmd('MAIL FROM:<x@remote.test>')).text, /^451 4\.3\.0 /);
    c.close();
    const ready = await fetch(`http://127.0.0.1:${p.inboundRt.httpPort}/readyz`);
    assert.equal(ready.status, 503);
    amqp.restore();
    await p.inboundRt.bus.waitConnected(15_000);
    assert.match(await send('after'), /^250 2\.0\.0 /);
    await waitFor(() => p.inbox('gus@example.test').length === 2, { timeoutMs: 20_000 });
    const subjects = p
      .inbox('gus@example.test')
      .map((f) => /Subject: (\w+)/.exec(readFileSync(f, 'utf8'))?.[1]);
    assert.deepEqual(subjects.sort(), ['after', 'before']);
  });

  test('while RabbitMQ blocks publishers (a resource alarm) MAIL FROM gets 452 4.3.1; afterwards mail flows', async () => {
    // what RabbitMQ sends to every connection when its disk or memory alarm goes off
    amqp.toClients(amqpFrames.blocked('low on disk'));
    await waitFor(() => p.inboundRt.bus.blocked === 'low on disk');
    const c = await RawSmtp.connect(p.inbound.port);
    await c.read();
    await c.cmd('EHLO client.example.net');
    assert.match((await c.cmd('MAIL FROM:<x@remote.test>')).text, /^452 4\.3\.1 Insufficient system storage/);
    c.close();
    amqp.toClients(amqpFrames.unblocked());
    await waitFor(() => p.inboundRt.bus.blocked === null);
    const before = p.inbox('gus@example.test').length;
    assert.match(await send('after-alarm'), /^250 2\.0\.0 /);
    await waitFor(() => p.inbox('gus@example.test').length === before + 1, { timeoutMs: 20_000 });
  });

  test('a queue that disappeared (unroutable) also gives 451, never 250', async () => {
    const { connect } = await import('amqplib');
    const conn = await connect(p.vhost.url);
    const ch = await conn.createChannel();
    await ch.unbindQueue('delivery', 'mail', 'delivery');
    try {
      assert.match(await send('unroutable'), /^451 4\.3\.0 /);
    } finally {
      await ch.bindQueue('delivery', 'mail', 'delivery');
      await conn.close();
    }
  });
});
