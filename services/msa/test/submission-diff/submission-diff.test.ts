// Differential submission test: every script in fixtures/ runs against Postfix's smtpd
// set up for submission (Debian's postfix, a private instance: STARTTLS required, AUTH
// only over TLS through Dovecot's SASL, the submission and smtps services of Debian's
// master.cf) and against the msa, both with the same users and passwords and the same
// limits, and the reply to each compared step must be the same once normalised
// (testkit's normaliseSmtpReply), or what the script's `rfc>` lines say where Postfix
// departs from the RFC or we differ on purpose. The script format is described in
// testkit's smtp-script.ts; `<tls>` sessions go to port 465's counterpart.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  dovecotInstalled,
  readSmtpScripts,
  intakeLikeMainCf,
  postfixInstalled,
  runSmtpScript,
  scriptDifferences,
  skipWithout,
  startDovecotAuth,
  startPostfix,
  tempDir,
  type DovecotAuth,
  type PostfixServer,
} from '@mailyard/testkit';
import { addAccount } from '../../../../test/harness.js';
import { PASSWORD, startMsaTestbed, type MsaTestbed } from '../msa-harness.js';
import { intakeDefaultLimits } from '../../../../test/intake-limits.js';

const scripts = readSmtpScripts(join(import.meta.dirname, 'fixtures'));

/**
 * EHLO keywords compared, AUTH with its mechanisms. Left out, as on port 25 (see
 * mta-inbound's smtp-diff): VRFY, ETRN, DSN, CHUNKING.
 */
const KEYWORDS = new Set([
  'PIPELINING',
  'SIZE',
  'STARTTLS',
  'AUTH',
  'ENHANCEDSTATUSCODES',
  '8BITMIME',
  'SMTPUTF8',
]);

/**
 * The users, on both servers, with the password of msa-harness. Each may send as its own
 * address only (Postfix: smtpd_sender_login_maps); `carol` is the one the lockout script
 * guesses at, so that no other script's failures count towards its lock.
 */
const DOMAIN = 'example.test';
const USERS = ['alice', 'bob', 'carol'].map((u) => `${u}@${DOMAIN}`);
/** A remote domain the msa's DNS knows (a recipient there is routable); Postfix sends nowhere. */
const REMOTE = { 'elsewhere.example': { MX: [{ priority: 10, exchange: 'mx.elsewhere.example' }] } };
/** A small message size limit on both, so that the size script sends little. */
const MESSAGE_SIZE_LIMIT = 1024 * 1024;

let t: MsaTestbed;
let postfix: PostfixServer;
let dovecot: DovecotAuth;
const dir = tempDir('mailyard-submission-diff-');

const skip = skipWithout(
  postfixInstalled() && dovecotInstalled() && process.getuid?.() === 0,
  'postfix or dovecot not installed, or not root',
);

before(async () => {
  if (skip) return;
  t = await startMsaTestbed({
    platform: { withDelivery: false, zone: REMOTE },
    msa: { message_size_limit: MESSAGE_SIZE_LIMIT },
  });
  for (const u of USERS) await addAccount(t.p.directory, u);
  dovecot = await startDovecotAuth({
    dir: join(dir.path, 'dovecot'),
    users: USERS.map((user) => ({ user, password: PASSWORD })),
  });
  const common = intakeLikeMainCf({
    dir: dir.path,
    hostname: 'submit.submission-diff.test',
    domain: DOMAIN,
    users: USERS,
    limits: { ...intakeDefaultLimits, messageSize: MESSAGE_SIZE_LIMIT },
  });
  writeFileSync(join(dir.path, 'senders'), USERS.map((u) => `${u} ${u}\n`).join(''));
  postfix = await startPostfix({
    dir: join(dir.path, 'postfix'),
    implicitTls: true,
    mainCf: {
      ...common,
      // no client is trusted for its address: only a login lets mail through
      mynetworks: '127.0.0.2/32',
      // Debian's master.cf submission service: TLS before anything, AUTH only over TLS
      smtpd_tls_security_level: 'encrypt',
      smtpd_tls_auth_only: 'yes',
      smtpd_sasl_auth_enable: 'yes',
      smtpd_sasl_type: 'dovecot',
      smtpd_sasl_path: dovecot.socket,
      // a user sends as their own address only, and nobody without a login (DESIGN
      // promise 4); decided at MAIL (smtpd_delay_reject = no), as the msa decides
      smtpd_sender_login_maps: `texthash:${join(dir.path, 'senders')}`,
      smtpd_sender_restrictions: 'reject_sender_login_mismatch, permit_sasl_authenticated, reject',
      smtpd_relay_restrictions: 'permit_sasl_authenticated, reject',
      smtpd_delay_reject: 'no',
    },
  });
});
after(async () => {
  await postfix?.stop();
  await dovecot?.stop();
  dir.cleanup();
  await t?.close();
});

void describe('submission compared with Postfix', { skip }, () => {
  scripts.forEach((script, i) => {
    void it(script.name, { timeout: 60_000 }, async () => {
      // each script from an address of its own: the msa's login lockout counts failures
      // by client address, and Postfix keeps none
      const localAddress = `127.0.3.${i + 1}`;
      const theirs = await runSmtpScript(
        {
          port: postfix.port,
          tlsPort: postfix.tlsPort,
          localAddress,
          keywords: KEYWORDS,
        },
        script,
      );
      const ours = await runSmtpScript(
        { port: t.msa.ports.submission, tlsPort: t.msa.ports.submissions, localAddress, keywords: KEYWORDS },
        script,
      );
      const diffs = scriptDifferences(script.steps, theirs, ours, 'postfix');
      assert.equal(diffs.length, 0, `${script.name}: replies differ\n${diffs.join('\n')}`);
    });
  });
});
