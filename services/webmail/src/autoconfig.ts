import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { clientEndpointsOf, type ClientEndpoints } from '@mailyard/admin';
import { normalizeDomain, parseMailAddress } from '@mailyard/smtp-core';
import type { Ctx } from './context.js';
import { ApiError, errors } from './errors.js';

/** An autodiscover request is a few hundred bytes; anything much larger is not one. */
const AUTODISCOVER_BODY_LIMIT = 16 * 1024;

const OUTLOOK_SCHEMA = 'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a';

const xml = (s: string | number) => String(s).replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);

/**
 * Thunderbird's autoconfig file (clientConfig 1.1, as the ISPDB serves it): implicit TLS
 * first (RFC 8314), STARTTLS as the second choice; the login is the whole address.
 */
export function thunderbirdConfig(domain: string, c: ClientEndpoints): string {
  const server = (tag: string, type: string, port: number, socket: 'SSL' | 'STARTTLS') =>
    [
      `    <${tag} type="${type}">`,
      `      <hostname>${xml(c.hostname)}</hostname>`,
      `      <port>${port}</port>`,
      `      <socketType>${socket}</socketType>`,
      `      <authentication>password-cleartext</authentication>`,
      `      <username>%EMAILADDRESS%</username>`,
      `    </${tag}>`,
    ].join('\n');
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<clientConfig version="1.1">',
    `  <emailProvider id="${xml(domain)}">`,
    `    <domain>${xml(domain)}</domain>`,
    `    <displayName>${xml(domain)}</displayName>`,
    `    <displayShortName>${xml(domain)}</displayShortName>`,
    server('incomingServer', 'imap', c.imaps, 'SSL'),
    server('incomingServer', 'imap', c.imap, 'STARTTLS'),
    server('incomingServer', 'pop3', c.pop3s, 'SSL'),
    server('outgoingServer', 'smtp', c.submissions, 'SSL'),
    server('outgoingServer', 'smtp', c.submission, 'STARTTLS'),
    '  </emailProvider>',
    '</clientConfig>',
    '',
  ].join('\n');
}

/** Outlook's autodiscover answer (POX, response schema 2006a) for one address. */
export function outlookAutodiscover(address: string, c: ClientEndpoints): string {
  const protocol = (type: string, port: number, extra = '') =>
    [
      '      <Protocol>',
      `        <Type>${type}</Type>`,
      `        <Server>${xml(c.hostname)}</Server>`,
      `        <Port>${port}</Port>`,
      '        <DomainRequired>off</DomainRequired>',
      `        <LoginName>${xml(address)}</LoginName>`,
      '        <SPA>off</SPA>',
      '        <SSL>on</SSL>',
      '        <AuthRequired>on</AuthRequired>',
      ...(extra ? [extra] : []),
      '      </Protocol>',
    ].join('\n');
  return [
    '<?xml version="1.0" encoding="utf-8"?>',
    '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">',
    `  <Response xmlns="${OUTLOOK_SCHEMA}">`,
    '    <Account>',
    '      <AccountType>email</AccountType>',
    '      <Action>settings</Action>',
    protocol('IMAP', c.imaps),
    protocol('POP3', c.pop3s),
    protocol('SMTP', c.submissions, '        <UsePOPAuth>off</UsePOPAuth>\n        <SMTPLast>off</SMTPLast>'),
    '    </Account>',
    '  </Response>',
    '</Autodiscover>',
    '',
  ].join('\n');
}

const noSuchDomain = () => new ApiError(404, 'no_such_domain', 'No mail service for this domain here');

/**
 * Mail clients configure themselves from the address alone: Thunderbird asks
 * https://autoconfig.<domain>/mail/config-v1.1.xml or
 * https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml, Outlook POSTs to
 * https://autodiscover.<domain>/autodiscover/autodiscover.xml (and newer versions ask
 * autodiscover.json first). Answered for local domains only; the hosts and ports are
 * CLIENT_HOSTNAME and the CLIENT_*_PORT keys, the same the DNS check expects in the SRV
 * records. The XML request is never given to an XML parser: it is bounded, refused when
 * it declares a DTD or entities, and only the address is read from it.
 */
export function registerAutoconfigRoutes(app: FastifyInstance, ctx: Ctx): void {
  const client = clientEndpointsOf(ctx.config);

  /** The local domain a request is about: from the address asked, else from the host name. */
  const domainOf = async (address: string | undefined, host: string | undefined): Promise<string> => {
    let domain: string | null;
    if (address !== undefined) {
      const p = parseMailAddress(address);
      if (!p.ok || p.value.domain.startsWith('[')) throw errors.badRequest('expected an email address');
      domain = p.value.domain;
    } else {
      const name = (host ?? '').replace(/:\d+$/, '').replace(/^(autoconfig|autodiscover)\./i, '');
      domain = normalizeDomain(name);
    }
    if (!domain) throw noSuchDomain();
    let local: boolean;
    try {
      local = await ctx.directory.isLocalDomain(domain);
    } catch {
      throw errors.unavailable();
    }
    if (!local) throw noSuchDomain();
    return domain;
  };

  const thunderbird = async (
    req: FastifyRequest<{ Querystring: { emailaddress?: unknown } }>,
    reply: FastifyReply,
  ) => {
    const q = req.query.emailaddress;
    if (q !== undefined && (typeof q !== 'string' || q.length > 320))
      throw errors.badRequest('expected one email address');
    const domain = await domainOf(q, req.hostname);
    return reply
      .type('application/xml; charset=utf-8')
      .header('cache-control', 'public, max-age=3600')
      .send(thunderbirdConfig(domain, client));
  };
  app.get('/mail/config-v1.1.xml', thunderbird);
  app.get('/.well-known/autoconfig/mail/config-v1.1.xml', thunderbird);

  void app.register(async (scope) => {
    // XML bodies only here, as a bounded string
    scope.addContentTypeParser(
      ['text/xml', 'application/xml'],
      { parseAs: 'string', bodyLimit: AUTODISCOVER_BODY_LIMIT },
      (_req, body, done) => done(null, body),
    );
    scope.post(
      '/autodiscover/autodiscover.xml',
      { bodyLimit: AUTODISCOVER_BODY_LIMIT },
      async (req, reply) => {
        const body = typeof req.body === 'string' ? req.body : '';
        if (/<!(DOCTYPE|ENTITY)/i.test(body))
          throw errors.badRequest('document type declarations are not accepted');
        const address = /<(?:[\w-]+:)?EMailAddress>\s*([^<\s]{1,320})\s*<\/(?:[\w-]+:)?EMailAddress>/i.exec(
          body,
        )?.[1];
        if (!address) throw errors.badRequest('expected an autodiscover request with an EMailAddress');
        const schema = /<(?:[\w-]+:)?AcceptableResponseSchema>\s*([^<\s]{1,200})\s*</i.exec(body)?.[1];
        // only Outlook's POX settings; ActiveSync (mobilesync) is not offered
        if (schema && schema !== OUTLOOK_SCHEMA) throw noSuchDomain();
        const decoded = address.replace(/&amp;/g, '&');
        const domain = await domainOf(decoded, undefined);
        const local = decoded.slice(0, decoded.lastIndexOf('@'));
        return reply
          .type('application/xml; charset=utf-8')
          .header('cache-control', 'no-store')
          .send(outlookAutodiscover(`${local}@${domain}`, client));
      },
    );
  });

  // Autodiscover v1.0 JSON (Outlook 2016 and later): where the POX endpoint is
  const json = async (email: unknown, protocol: unknown, reply: FastifyReply) => {
    if (typeof email !== 'string' || email.length > 320)
      throw errors.badRequest('expected one email address');
    const domain = await domainOf(email, undefined);
    if (typeof protocol !== 'string' || protocol.toLowerCase() !== 'autodiscoverv1')
      return reply.code(400).send({
        ErrorCode: 'ProtocolNotSupported',
        ErrorMessage: 'Only AutodiscoverV1 is offered (IMAP, POP3 and SMTP settings)',
      });
    return reply.header('cache-control', 'no-store').send({
      Protocol: 'AutodiscoverV1',
      Url: `https://autodiscover.${domain}/autodiscover/autodiscover.xml`,
    });
  };
  app.get<{ Params: { email: string }; Querystring: { Protocol?: unknown } }>(
    '/autodiscover/autodiscover.json/v1.0/:email',
    (req, reply) => json(req.params.email, req.query.Protocol, reply),
  );
  app.get<{ Querystring: { Email?: unknown; Protocol?: unknown } }>(
    '/autodiscover/autodiscover.json',
    (req, reply) => json(req.query.Email, req.query.Protocol, reply),
  );
}
