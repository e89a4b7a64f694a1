import { isAscii } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import type { SMTPServerSession } from 'smtp-server';
import type { Directory } from '@mailyard/directory';
import { DkimKeysUnavailableError, type DkimSigner } from '@mailyard/dkim';
import type { MailResolver } from '@mailyard/dns';
import { Counter, type Logger, type Registry } from '@mailyard/observability';
import { parseMailAddress, reply, rfc5322Date } from '@mailyard/smtp-core';
import { downgradeTo7Bit } from '@mailyard/smtp-core/mime-downgrade';
import {
  localPostmaster,
  sessionUser,
  type FinishContext,
  type Finished,
  type IntakeRole,
  type Route,
} from '@mailyard/smtp-intake';
import type { MsaConfig } from './config.js';
import {
  applySubmissionFixups,
  fieldValue,
  fieldsNamed,
  mailboxAddresses,
  splitMessage,
  type SplitMessage,
} from './headers.js';
import type { SubmissionLogin } from './login.js';
import { checkRecipientDomain } from './recipient-domain.js';
import { ownsAddress } from './sender.js';

export type Listener = 'submission' | 'submissions';

export interface SubmissionDeps {
  directory: Directory;
  resolver: MailResolver;
  /** Null when DKIM signing is off. */
  dkim: DkimSigner | null;
  logger: Logger;
  registry: Registry;
}

/**
 * The MSA's part of the intake (RFC 6409): only logged-in users send, only as their
 * own addresses, to local accounts or to domains that take mail; the message gets the
 * fix-ups of RFC 6409 §8, a Received header that keeps the user's address private, and
 * a DKIM signature for the author's domain.
 */
export function submissionRole(
  config: MsaConfig,
  deps: SubmissionDeps,
  login: SubmissionLogin,
): IntakeRole<Listener> {
  const { directory, logger } = deps;
  const delimiter = config.recipient_delimiter;
  const dkimSignatures = new Counter({
    name: 'mailyard_msa_dkim_signatures_total',
    help: 'DKIM signatures added, by algorithm; algorithm="none" counts messages sent unsigned',
    labelNames: ['algorithm'] as const,
    registers: [deps.registry],
  });

  // per transaction (the envelope object is replaced on RSET/EHLO/end of message)
  const ownedBy = new WeakMap<object, Set<string>>();
  const ownedAddresses = async (session: SMTPServerSession, account: string): Promise<Set<string>> => {
    let owned = ownedBy.get(session.envelope);
    if (!owned) {
      owned = new Set(await directory.addressesOf(account));
      ownedBy.set(session.envelope, owned);
    }
    return owned;
  };
  /** The logged-in account; mayTransact has made sure there is one. */
  const accountOf = (session: SMTPServerSession): string => {
    const account = sessionUser(session);
    if (!account) throw reply.authRequired();
    return account;
  };

  /**
   * RFC 6376 §5.3: a signer should convert 8-bit content to 7 bit before signing. The relay
   * converts it for a server without 8BITMIME (RFC 6152 §3), which would break a signature
   * made over the 8-bit form and fail DMARC at the receiver. Converted only for a domain
   * that has keys: unsigned mail keeps its 8-bit form. 8-bit data in a header (SMTPUTF8)
   * cannot be converted; such mail goes only to servers that offer SMTPUTF8, and they
   * offer 8BITMIME too (RFC 6531 §3.1). A message the user signed (PGP/MIME or S/MIME,
   * `multipart/signed`, RFC 1847) is never changed: its signature covers the signed part's
   * bytes and its Content-Transfer-Encoding, and would break at once for every recipient,
   * where the DKIM signature breaks only at a server without 8BITMIME.
   */
  const sevenBitForSigning = async (
    message: Buffer,
    domain: string,
    body: FinishContext['body'],
    userSigned: boolean,
  ): Promise<Buffer | null> => {
    if (userSigned || !needsSevenBit(message, body)) return null;
    if (!(await deps.dkim!.hasKeys(domain))) return null;
    const seven = await downgradeTo7Bit(message);
    return seven.kind === 'converted' ? seven.data : null;
  };

  const sign = async (
    message: Buffer,
    domain: string,
    ctx: FinishContext,
    userSigned: boolean,
  ): Promise<Finished> => {
    const { queueId } = ctx;
    if (!deps.dkim) return { message };
    try {
      const seven = await sevenBitForSigning(message, domain, ctx.body, userSigned);
      if (seven) message = seven;
      const signed = await deps.dkim.sign(message, domain);
      for (const e of signed.errors) logger.warn({ queueId, domain, err: e }, 'DKIM key problem');
      for (const s of signed.signatures) dkimSignatures.inc({ algorithm: s.algorithm });
      if (!signed.signatures.length) dkimSignatures.inc({ algorithm: 'none' });
      return {
        message: signed.headers ? Buffer.concat([Buffer.from(signed.headers), message]) : message,
        ...(seven ? { body: '7BIT' as const } : {}),
      };
    } catch (err) {
      // the store cannot say whether the domain has keys: refused for now (the client
      // retries), never sent unsigned where receivers would reject it under DMARC
      if (err instanceof DkimKeysUnavailableError) {
        logger.warn({ queueId, domain, err }, 'DKIM keys unavailable, message not accepted');
        throw reply.signingUnavailable();
      }
      // a signing error with the keys in hand: sent unsigned, the log says why
      dkimSignatures.inc({ algorithm: 'none' });
      logger.warn({ queueId, domain, err }, 'DKIM signing failed, sending unsigned');
      return { message };
    }
  };

  return {
    service: 'msa',
    banner: 'Mailyard submission',
    listeners: {
      submission: { port: config.submission_port, implicitTls: false },
      submissions: { port: config.submissions_port, implicitTls: true },
    },
    // the reverse name is only used in the Received header, and only when asked for
    reverseLookup: config.submission_received_client,
    greetingDelay: 0,
    limitExceptions: config.smtpd_client_event_limit_exceptions,
    // permit_sasl_authenticated ends it: a user on a listed dynamic address still sends
    clientRestrictions: 'login',
    auth: login.auth,
    onClose: login.onClose,
    received: { authenticated: true, hideClient: !config.submission_received_client },

    mayTransact: (session) => (sessionUser(session) ? null : reply.authRequired()),

    /** Postfix's reject_sender_login_mismatch: the user's addresses and plus-addresses of them. */
    async checkSender(address, session) {
      const account = accountOf(session);
      // the null sender is for bounces (RFC 5321 §4.5.5), which users do not send
      if (address === '') throw reply.senderLoginMismatch('', account);
      if (!ownsAddress(await ownedAddresses(session, account), address, delimiter))
        throw reply.senderLoginMismatch(address, account);
    },

    async routeRecipient(address): Promise<Route> {
      const parsed = parseMailAddress(address);
      // relay tricks (%-hack, quoted @, source routes) are malformed addresses here
      if (!parsed.ok) throw reply.badRecipientSyntax(address);
      const { domain } = parsed.value;
      if (domain.startsWith('[')) return 'outbound';
      if (await directory.isLocalDomain(domain)) {
        if (!(await directory.resolve(parsed.value.address))) throw reply.noSuchUser(address);
        return 'delivery';
      }
      switch (await checkRecipientDomain(deps.resolver, domain)) {
        case 'ok':
          return 'outbound';
        case 'no_mail':
          throw reply.noMxDomain(address, domain);
        case 'temp_fail':
          throw reply.dnsTempFail(address);
      }
    },

    /**
     * RFC 5321 §4.5.1: the bare postmaster is accepted on every port, as Postfix does on
     * submission too; it is the same mailbox port 25 delivers it to.
     */
    postmaster: () => localPostmaster(directory, config.myhostname),

    /** reject_sender_login_mismatch applies to the author too: From: and Sender: must be ours. */
    async checkMessage(message, session) {
      const account = accountOf(session);
      const owned = await ownedAddresses(session, account);
      const split = splitMessage(message);
      for (const field of [...fieldsNamed(split, 'from'), ...fieldsNamed(split, 'sender')]) {
        const addresses = mailboxAddresses(fieldValue(field));
        if (!addresses.length) throw reply.headerFromMismatch(fieldValue(field), account);
        for (const a of addresses)
          if (!ownsAddress(owned, a, delimiter)) throw reply.headerFromMismatch(a, account);
      }
    },

    async finish(message: Buffer, ctx: FinishContext) {
      const split = splitMessage(message);
      const fixed = applySubmissionFixups(split, {
        from: `<${ctx.mailFrom}>`,
        date: rfc5322Date(),
        messageId: `<${ctx.queueId}.${randomBytes(6).toString('hex')}@${config.myhostname}>`,
      });
      const traced = Buffer.concat([Buffer.from(ctx.trace), fixed.message]);
      const domain = authorDomain(split, ctx.mailFrom);
      const signed = domain ? await sign(traced, domain, ctx, clearSigned(split)) : { message: traced };
      return { ...signed, log: { added: fixed.added, bccRemoved: fixed.removedBcc } };
    },
  };
}

/** The domain to sign for: the first From: address's, else the envelope sender's. */
function authorDomain(split: ReturnType<typeof splitMessage>, mailFrom: string): string | null {
  const fromField = fieldsNamed(split, 'from')[0];
  if (fromField) {
    const first = parseMailAddress(mailboxAddresses(fieldValue(fromField))[0] ?? '');
    if (first.ok) return first.value.domain;
  }
  const sender = parseMailAddress(mailFrom);
  return sender.ok ? sender.value.domain : null;
}

/** A part labelled 8bit or binary, which the relay relabels for a server without 8BITMIME. */
const EIGHT_BIT_LABEL = /^Content-Transfer-Encoding:[ \t]*(?:\r?\n[ \t]+)?(?:8bit|binary)\b/im;

/**
 * Whether the message itself is clear-signed (PGP/MIME or S/MIME, RFC 1847 §2.1): its own
 * Content-Type field, unfolded, comments dropped, names multipart/signed, in any case and
 * with any parameters (RFC 2045 §5.1). A signed message forwarded inside it (a
 * message/rfc822 part), or a line of text that reads like the field, does not make it
 * one: the conversion leaves a part of 7-bit bytes labelled 7bit as it is, which a
 * signed part is (RFC 3156 §3; S/MIME asks the same).
 */
function clearSigned(split: SplitMessage): boolean {
  return fieldsNamed(split, 'content-type').some((f) =>
    /^multipart[ \t]*\/[ \t]*signed[ \t]*(?:;|$)/i.test(
      fieldValue(f)
        .replace(/\([^()]*\)/g, '')
        .trim(),
    ),
  );
}

/**
 * Whether the relay could change this message on its way to a server without 8BITMIME
 * (and so break a DKIM signature made now), and the msa may change it instead: 8-bit
 * bytes, or under BODY=8BITMIME a part labelled 8bit or binary (the relay leaves a part
 * labelled 7bit as it is, long lines and all). Most mail is 7-bit and skips the
 * conversion with one linear scan, or two.
 */
function needsSevenBit(message: Buffer, body: FinishContext['body']): boolean {
  if (!isAscii(message)) return true;
  return body !== '7BIT' && EIGHT_BIT_LABEL.test(message.toString('latin1'));
}
