import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { normalizeDomainArg } from '@mailyard/admin';
import type { CommandContext } from '../context.js';
import { CliError, usageError } from '../errors.js';

/** The passwords `setup` generates, one file each in secrets/ (docker-compose.yml's `secrets:`). */
export const GENERATED_SECRETS = [
  'rabbitmq-password',
  'redis-password',
  'grafana-admin-password',
  'alertmanager-smtp-password',
] as const;

export interface SetupOptions {
  dir: string;
  hostname: string;
  domain: string;
  /** The server's public IPv4 or IPv6 address, for the A/AAAA and PTR records. */
  ip?: string;
  /** Where alerts go (default postmaster@domain). */
  admin?: string;
  force?: boolean;
}

/**
 * First start of a compose installation: generated passwords (kept if already there:
 * setup never rotates one behind the services' back), the files derived from them, the
 * `.env` compose reads, and the DNS records to publish.
 */
export function setup(opts: SetupOptions, print: (line: string) => void): void {
  const dir = resolve(opts.dir);
  const hostname = normalizeDomainArg(opts.hostname);
  const domain = normalizeDomainArg(opts.domain);
  if (opts.ip !== undefined && !isIP(opts.ip)) throw usageError(`--ip ${opts.ip} is not an IP address`);
  const admin = opts.admin ?? `postmaster@${domain}`;
  if (!/^[^@\s]+@[^@\s]+$/.test(admin)) throw usageError(`--admin ${admin} is not a mail address`);
  const template = join(dir, 'deploy', 'alertmanager', 'alertmanager.yml');
  if (!existsSync(template))
    throw new CliError(`${dir} is not a Mailyard checkout (no deploy/alertmanager/alertmanager.yml)`);
  const envFile = join(dir, '.env');
  if (existsSync(envFile) && !opts.force)
    throw new CliError(`${envFile} exists already; pass --force to write it again (passwords are kept)`);

  const secrets = join(dir, 'secrets');
  mkdirSync(secrets, { recursive: true, mode: 0o700 });
  chmodSync(secrets, 0o700);
  // Readable inside the containers, whose users differ (rabbitmq, redis, grafana,
  // nobody): the directory keeps everyone else on the host out.
  const write = (name: string, text: string) => writeFileSync(join(secrets, name), text, { mode: 0o644 });
  const passwords: Record<string, string> = {};
  for (const name of GENERATED_SECRETS) {
    const file = join(secrets, name);
    passwords[name] = existsSync(file)
      ? readFileSync(file, 'utf8').trim()
      : randomBytes(24).toString('base64url');
    if (!existsSync(file)) write(name, `${passwords[name]}\n`);
  }
  // The same passwords in the forms the third-party servers read.
  write('rabbitmq.conf', `default_user = mailyard\ndefault_pass = ${passwords['rabbitmq-password']}\n`);
  write('redis.conf', `requirepass ${passwords['redis-password']}\n`);
  write('rspamd-redis.conf', `servers = "redis:6379";\npassword = "${passwords['redis-password']}";\n`);
  const alerts = `alerts@${domain}`;
  write(
    'alertmanager.yml',
    readFileSync(template, 'utf8')
      .replaceAll('alerts@mail.localhost', alerts)
      .replaceAll('postmaster@mail.localhost', admin),
  );
  writeFileSync(
    envFile,
    [
      '# Written by `mailyard setup`; docker-compose.yml reads it. The passwords are in secrets/.',
      `MYHOSTNAME=${hostname}`,
      `MAILYARD_DOMAIN=${domain}`,
      `ALERTS_FROM=${alerts}`,
      // the ACME CA's expiry notices for the platform's certificate
      `ACME_EMAIL=${admin}`,
      // the public address in front of the containers: the relay counts it as ours, so
      // mail for a domain not ours whose MX points here bounces as a loop instead of
      // going to ourselves through the NAT
      // (Postfix's proxy_interfaces)
      opts.ip ? `MAILYARD_PUBLIC_IP=${opts.ip}` : '# MAILYARD_PUBLIC_IP=<this server’s public address>',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );

  print(`wrote ${envFile} and ${secrets}/ (${GENERATED_SECRETS.join(', ')})`);
  print('');
  print('Publish these DNS records:');
  print('');
  const address = opts.ip ?? '<this server’s public address>';
  const a = opts.ip && isIP(opts.ip) === 6 ? 'AAAA' : 'A';
  print(`${hostname}.\tIN ${a}\t${address}`);
  print(`${domain}.\tIN MX\t10 ${hostname}.`);
  print(`${domain}.\tIN TXT\t"v=spf1 mx -all"`);
  print(`_dmarc.${domain}.\tIN TXT\t"v=DMARC1; p=quarantine; rua=mailto:${admin}"`);
  print('');
  print(`and ask your hosting provider for the reverse record (PTR) of ${address}: ${hostname}.`);
  print('');
  print('Then start the platform and add the domain, its DKIM key and the alerts account:');
  print('');
  print('  docker compose up -d --build');
  print(`  docker compose exec delivery mailyard domain add ${domain}`);
  print(`  docker compose exec delivery mailyard dkim generate ${domain}   # prints the DKIM record`);
  print(
    `  docker compose exec -T delivery mailyard user add ${alerts} --password-stdin < secrets/alertmanager-smtp-password`,
  );
}

export function registerSetupCommand(program: Command, ctx: CommandContext): void {
  program
    .command('setup')
    .description(
      'first start: generate the passwords and .env for docker-compose.yml, print the DNS records to publish',
    )
    .requiredOption('--hostname <name>', "the server's public name (MX target, greeting, certificates)")
    .requiredOption('--domain <domain>', 'the first mail domain')
    .option('--ip <address>', "the server's public address, for the A/AAAA and PTR records")
    .option('--admin <address>', 'where alerts are mailed (default postmaster@<domain>)')
    .option('--dir <path>', 'the Mailyard checkout holding docker-compose.yml', '.')
    .option('--force', 'write .env again (existing passwords are kept)')
    .action((opts: SetupOptions) => setup(opts, (line) => ctx.print(line)));
}
