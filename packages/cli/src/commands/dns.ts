import type { Command } from 'commander';
import {
  dnsCheckerFromConfig,
  serverStatuses,
  verdictOf,
  type CheckStatus,
  type DomainReport,
  type ServerReport,
} from '@mailyard/admin';
import type { CommandContext } from '../context.js';
import { CliError, ExitCode } from '../errors.js';
import { plural } from '@mailyard/smtp-core';

const LABEL: Record<CheckStatus, string> = {
  ok: 'ok',
  wrong: 'WRONG',
  missing: 'MISSING',
  unchecked: 'UNCHECKED',
};
const col = (text: string, width: number) => text.padEnd(width);

function printDomain(ctx: CommandContext, r: DomainReport): void {
  ctx.print(`${r.domain}`);
  for (const x of r.records) {
    ctx.print(`  ${col(LABEL[x.status], 9)} ${col(x.type, 5)} ${x.name}${x.detail ? `: ${x.detail}` : ''}`);
    if (x.status === 'ok' || x.status === 'unchecked') continue;
    for (const f of x.found) ctx.print(`            found:   ${f}`);
    ctx.print(`            publish: ${x.zoneLine}`);
  }
}

function printServer(ctx: CommandContext, r: ServerReport): void {
  ctx.print(`server ${r.hostname}`);
  if (r.detail)
    ctx.print(`  ${col(r.detail.startsWith('could not') ? 'UNCHECKED' : 'MISSING', 9)} ${r.detail}`);
  for (const a of r.addresses) {
    const ptr = a.ptr.length ? a.ptr.join(', ') : 'none';
    ctx.print(
      `  ${col(LABEL[a.status], 9)} ${col(a.address, 15)} PTR ${ptr}; ${r.hostname} ${a.forward ? 'resolves to it' : 'does not resolve to it'}${a.status === 'ok' ? '' : a.detail ? ` (${a.detail})` : ''}`,
    );
  }
  for (const l of r.dnsbl) {
    const label = l.listed ? 'LISTED' : l.checked ? 'ok' : 'UNCHECKED';
    ctx.print(`  ${col(label, 9)} ${col(l.address, 15)} on ${l.list}${l.detail ? `: ${l.detail}` : ''}`);
  }
  if (r.tls.notAfter !== null && r.tls.daysLeft !== null)
    ctx.print(
      `  ${col(r.tls.daysLeft < 0 ? 'EXPIRED' : r.tls.daysLeft < 14 ? 'EXPIRING' : 'ok', 9)} certificate valid until ${r.tls.notAfter} (${r.tls.daysLeft < 0 ? 'expired' : `${plural(r.tls.daysLeft, 'day')} left`})`,
    );
  else ctx.print(`  ${col('-', 9)} certificate: ${r.tls.detail ?? 'none'}`);
}

/** `mailyard dns check`: the DNS and deliverability report of the admin console, in a terminal. */
export function registerDnsCommands(program: Command, ctx: CommandContext): void {
  const dns = program
    .command('dns')
    .description('check what DNS says about the local domains and this server');

  dns
    .command('check')
    .description(
      "compare every record the local domains need (MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, client SRV) with what DNS answers now, and check this server's forward and reverse DNS, blocklists and certificate; exits 1 when something is wrong or missing, 75 when something could not be checked",
    )
    .argument('[domain]', 'check only this local domain (default: every one)')
    .action((name: string | undefined) =>
      ctx.withOperations(async (ops, config) => {
        const checker = dnsCheckerFromConfig(config);
        const domains = name === undefined ? await ops.listDomains() : [name];
        const statuses: (CheckStatus | 'listed')[] = [];
        for (const d of domains) {
          const r = await ops.checkDomainDns(d, checker);
          printDomain(ctx, r);
          statuses.push(...r.records.map((x) => x.status));
        }
        const server = await ops.checkServerDns(checker);
        printServer(ctx, server);
        statuses.push(...serverStatuses(server));
        // expiring within the alert rules' fortnight is worth failing for (expired is counted already)
        const days = server.tls.daysLeft;
        if (days !== null && days >= 0 && days < 14) statuses.push('wrong');
        const problems = statuses.filter((s) => s === 'wrong' || s === 'missing' || s === 'listed').length;
        const unchecked = statuses.filter((s) => s === 'unchecked').length;
        switch (verdictOf(statuses)) {
          case 'ok':
            return;
          case 'problems':
            throw new CliError(
              `${problems} ${problems === 1 ? 'check fails' : 'checks fail'}: publish the records shown, fix what is marked`,
            );
          case 'unchecked':
            throw new CliError(
              `${unchecked} ${unchecked === 1 ? 'check' : 'checks'} could not be made (DNS failed); try again`,
              ExitCode.tempfail,
            );
        }
      }),
    );
}
