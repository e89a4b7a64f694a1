#!/usr/bin/env node
// `mailyard`: administration of domains, accounts and aliases. Everything is in cli.ts.
import { defaultDeps, runCli } from './cli.js';

// `mailyard user list | head` closes the pipe early; that is not an error worth a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
});
process.exitCode = await runCli(process.argv.slice(2), defaultDeps());
