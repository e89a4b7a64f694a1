// Differential SMTP test: every script in fixtures/ runs against Postfix's smtpd (Debian's
// postfix, a private instance) and against mta-inbound, both set up alike (below), and
// the reply to each compared step must be the same once normalised (see normalise.ts),
// or what the script's `rfc>` lines say where Postfix departs from the RFC. The script
// format is described in testkit's smtp-script.ts. Only the protocol is compared: mta-inbound runs
// without the policy service, Postfix with no restrictions but the relay check.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  readSmtpScripts,
  intakeLikeMainCf,
  postfixInstalled,
  RawSmtp,
  runSmtpScript,
  scriptDifferences,
  skipWithout,
  startPostfix,
  tempDir,
  type PostfixServer,
} from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../../test/harness.js';
import { intakeDefaultLimits } from '../../../../test/intake-limits.js';

const scripts = readSmtpScripts(join(import.meta.dirname, 'fixtures'));

/**
 * EHLO keywords compared. Left out: VRFY (Postfix names it, RFC 5321 §4.1.1.6 does not
 * ask for it, and both answer VRFY), ETRN (RFC 1985, a queue flush for dial-up secondaries:
 * we keep no queue to flush), DSN (RFC 3461: not offered by us, our bounces are sent by
 * delivery and outbound-relay whatever NOTIFY says), CHUNKING (RFC 3030: smtp-server has
 * no BDAT), AUTH and XCLIENT/XFORWARD (not on port 25).
 */
const KEYWORDS = new Set(['PIPELINING', 'SIZE', 'STARTTLS', 'ENHANCEDSTATUSCODES', '8BITMIME', 'SMTPUTF8']);

/** The accepted domain and its users, on both servers. */
const DOMAIN = 'example.test';
const USERS = [`user@${DOMAIN}`, `postmaster@${DOMAIN}`];
/**
 * The client connects from 127.0.0.1, outside mynetworks on both servers (mta-inbound's
 * default trusts loopback), so that a foreign recipient is relaying, refused.
 */
const MYNETWORKS = '127.0.0.2/32';

let p: Platform;
let postfix: PostfixServer;
let messageSizeLimit: number;
const dir = tempDir('mailyard-smtp-diff-');

const skip = skipWithout(
  postfixInstalled() && process.getuid?.() === 0,
  'postfix not installed, or not root',
);

before(async () => {
  if (skip) return;
  p = await startPlatform({ withDelivery: false, inbound: { mynetworks: MYNETWORKS } });
  for (const u of USERS) await addAccount(p.directory, u);
  messageSizeLimit = await inboundSizeLimit();
  postfix = await startPostfix({
    dir: join(dir.path, 'postfix'),
    mainCf: {
      ...intakeLikeMainCf({
        dir: dir.path,
        hostname: 'mx.smtp-diff.test',
        domain: DOMAIN,
        users: USERS,
        limits: { ...intakeDefaultLimits, messageSize: messageSizeLimit },
      }),
      mynetworks: MYNETWORKS,
      // mta-inbound refuses relaying for good (554 5.7.1), not for now (Postfix's default 454)
      smtpd_relay_restrictions: 'permit_mynetworks, reject_unauth_destination',
      smtpd_tls_security_level: 'may',
    },
  });
});
after(async () => {
  await postfix?.stop();
  dir.cleanup();
  await p?.close();
});

/** message_size_limit as mta-inbound announces it in EHLO's SIZE. */
async function inboundSizeLimit(): Promise<number> {
  const c = await RawSmtp.connect(p.inbound.port);
  try {
    await c.read();
    const ehlo = await c.cmd('EHLO client.example.net');
    const size = ehlo.lines.map((l) => /^250[ -]SIZE (\d+)/i.exec(l)?.[1]).find(Boolean);
    assert.ok(size, `no SIZE in ${ehlo.text}`);
    return Number(size);
  } finally {
    c.close();
  }
}

void describe('SMTP compared with Postfix', { skip }, () => {
  for (const script of scripts) {
    void it(script.name, { timeout: 60_000 }, async () => {
      const theirs = await runSmtpScript({ port: postfix.port, keywords: KEYWORDS }, script);
      const ours = await runSmtpScript({ port: p.inbound.port, keywords: KEYWORDS }, script);
      const diffs = scriptDifferences(script.steps, theirs, ours, 'postfix');
      assert.equal(diffs.length, 0, `${script.name}: replies differ\n${diffs.join('\n')}`);
    });
  }
});
