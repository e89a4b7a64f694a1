#!/usr/bin/env node
// `mailyard`: administration of domains, accounts and aliases. Everything is in cli.ts.
import { defaultDeps, runCli } from './cli.js';

process.exitCode = await runCli(process.argv.slice(2), defaultDeps());
