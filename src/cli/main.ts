#!/usr/bin/env node
/**
 * `ibg`, the command-line client of the user API (`npm run cli -- <command>`): submit a JSONL,
 * follow it, list, cancel and download batches. `ibg --help` lists the commands, the
 * environment (IBG_BASE_URL, IBG_API_KEY) and the exit codes.
 */
import { run } from './commands.ts';

// `npm run cli` runs scripts from the package's root; paths on the command line (FILE, --out)
// mean the directory the user typed them in, which npm passes as INIT_CWD.
if (process.env.npm_lifecycle_event === 'cli' && process.env.INIT_CWD) process.chdir(process.env.INIT_CWD);

try {
  process.loadEnvFile('.env');
} catch {
  // no .env: the environment alone (which wins over the file anyway)
}

const code = await run(process.argv.slice(2), { out: process.stdout, err: process.stderr, env: process.env });
// Exit as soon as the output is flushed: fetch keeps idle connections open for seconds, which
// would otherwise hold the process after its work is done.
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
