import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { type BatchStatus, FINISHED } from '../batches/batch-states.ts';
import { type Batch, GatewayClient } from './api-client.ts';
import { CliError, EXIT, type ExitCode } from './cli-error.ts';
import { downloadResults, fileStem } from './output-writer.ts';
import { type ProgressView, progressView, waitForBatch } from './wait.ts';

/** Where the command's output goes: results on `out` (stdout), everything else on `err` (stderr). */
export interface Io {
  out: NodeJS.WriteStream;
  err: NodeJS.WriteStream;
  env: NodeJS.ProcessEnv;
}

interface Context {
  io: Io;
  json: boolean;
  client: () => GatewayClient;
}

interface Command {
  usage: string;
  summary: string;
  help: string;
  options: Record<string, { type: 'string' | 'boolean'; short?: string }>;
  positionals: number;
  run(ctx: Context, values: Record<string, string | boolean | undefined>, positionals: string[]): Promise<ExitCode>;
}

const COMMON_OPTIONS = {
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const COMMANDS: Record<string, Command> = {
  submit: {
    usage: 'submit FILE [--wait] [--out DIR] [--json]',
    summary: 'upload a JSONL of image requests; this creates the batch',
    help: `Uploads FILE (one image request per line) and prints the new batch's id and status.
  --wait      poll until the batch has finished, showing progress on stderr, then print a summary
  --out DIR   also write the results into DIR when it has finished (implies --wait)
  --json      print the batch object as JSON instead
The privacy policy must have been accepted first (ibg accept-privacy).`,
    options: { wait: { type: 'boolean' }, out: { type: 'string' } },
    positionals: 1,
    async run(ctx, values, [file]) {
      await checkReadable(file);
      const client = ctx.client();
      // Checks the key and the privacy gate before sending what may be gigabytes.
      const privacy = await client.privacy();
      if (!privacy.accepted) {
        throw new CliError(
          'The image batch privacy policy is not accepted yet for this key’s user: run `ibg accept-privacy` first.',
          EXIT.auth,
        );
      }
      const batch = await client.uploadBatch(file);
      const out = values.out as string | undefined;
      if (!values.wait && out === undefined) {
        print(ctx, ctx.json ? batch : `${batch.id} ${batch.status}`);
        return EXIT.ok;
      }
      return finish(ctx, client, await waitWithProgress(ctx, client, batch.id), out);
    },
  },
  status: {
    usage: 'status ID [--json]',
    summary: 'show a batch: status, counts, files, billing, problems',
    help: 'Prints the batch ID: its status, request counts, output and error files, billing and any errors.',
    options: {},
    positionals: 1,
    async run(ctx, _values, [id]) {
      const batch = await ctx.client().getBatch(id);
      print(ctx, ctx.json ? batch : describe(batch));
      return EXIT.ok;
    },
  },
  list: {
    usage: 'list [--limit N] [--after ID] [--status STATUS] [--json]',
    summary: 'list your batches, newest first',
    help: `Prints your batches, newest first, as a table.
  --limit N        how many (1-100, default 20)
  --after ID       the page after this batch (the last id of the previous page)
  --status STATUS  only batches in this status (validating, in_progress, completed, failed, ...)`,
    options: { limit: { type: 'string' }, after: { type: 'string' }, status: { type: 'string' } },
    positionals: 0,
    async run(ctx, values) {
      const page = await ctx.client().listBatches({
        limit: values.limit as string | undefined,
        after: values.after as string | undefined,
        status: values.status as string | undefined,
      });
      if (ctx.json) {
        print(ctx, page);
        return EXIT.ok;
      }
      print(ctx, page.data.length ? table(page.data) : 'no batches');
      if (page.has_more) ctx.io.err.write(`more: ibg list --after ${page.last_id}\n`);
      return EXIT.ok;
    },
  },
  cancel: {
    usage: 'cancel ID [--wait] [--json]',
    summary: 'cancel a batch that has not finished',
    help: `Asks for the batch to be cancelled and prints its status (cancelling, or cancelled).
What finished before is kept and billed; the rest is refunded.
  --wait   poll until it has finished cancelling, then print a summary`,
    options: { wait: { type: 'boolean' } },
    positionals: 1,
    async run(ctx, values, [id]) {
      const client = ctx.client();
      const batch = await client.cancelBatch(id);
      if (!values.wait) {
        print(ctx, ctx.json ? batch : `${batch.id} ${batch.status}`);
        return EXIT.ok;
      }
      const done = await waitWithProgress(ctx, client, batch.id);
      print(ctx, ctx.json ? done : outcome(done));
      return EXIT.ok;
    },
  },
  download: {
    usage: 'download ID [--out DIR] [--wait] [--json]',
    summary: "write a finished batch's images and errors into a directory",
    help: `Writes every image of the batch as DIR/<custom_id>_<index>.<png|jpg|webp> (index from 0)
and every failed line into DIR/errors.jsonl (created even when empty). The exit code follows how
the batch ended, as for submit --wait (4 for a cancelled batch, whose finished part is written).
  --out DIR   the directory (created when missing; default ./ID)
  --wait      first wait until the batch has finished
  --json      print the summary as JSON`,
    options: { out: { type: 'string' }, wait: { type: 'boolean' } },
    positionals: 1,
    async run(ctx, values, [id]) {
      const client = ctx.client();
      let batch = await client.getBatch(id);
      if (!FINISHED.includes(batch.status as BatchStatus)) {
        if (!values.wait) {
          throw new CliError(
            `${batch.id} is ${batch.status}: its results come when it has finished (add --wait)`,
            EXIT.rejected,
          );
        }
        batch = await waitWithProgress(ctx, client, batch.id);
      }
      const summary = await downloadResults(client, batch, (values.out as string | undefined) ?? fileStem(batch.id));
      print(ctx, ctx.json ? summary : wrote(summary));
      return ending(ctx, batch);
    },
  },
  'accept-privacy': {
    usage: 'accept-privacy [--json]',
    summary: 'accept the privacy policy (once, before the first submit)',
    help: 'Accepts the image batch privacy policy for the user of IBG_API_KEY (PUT /api/image-batch-privacy).',
    options: {},
    positionals: 0,
    async run(ctx) {
      const client = ctx.client();
      await client.acceptPrivacy();
      const state = await client.privacy();
      print(ctx, ctx.json ? state : 'privacy policy accepted');
      return EXIT.ok;
    },
  },
};

const MAIN_HELP = `ibg: the image batch gateway from the command line

usage: ibg <command> [options]      (in the repository: npm run cli -- <command> [options])

commands:
${Object.values(COMMANDS)
  .map((c) =>
    c.usage.length > 46 ? `  ${c.usage}\n  ${''.padEnd(46)} ${c.summary}` : `  ${c.usage.padEnd(46)} ${c.summary}`,
  )
  .join('\n')}

Every command takes --json (the API's JSON on stdout) and --help.
Progress goes to stderr: a bar on a terminal, plain lines otherwise.

environment (also read from ./.env):
  IBG_BASE_URL   the service (default http://127.0.0.1:$PORT, PORT default 8080)
  IBG_API_KEY    your API key (sk-...)

exit codes:
  0  done
  1  usage error (unknown command or option, missing argument)
  2  authentication: no or wrong API key, or the privacy policy not accepted
  3  refused: a missing or unreadable file, a request the API refused (4xx), a batch whose lines are invalid
  4  the batch waited for (or downloaded) ended failed, expired or cancelled
  5  the service is unreachable or failed (5xx)
`;

/** Runs one command line; returns the process's exit code. Never throws. */
export async function run(argv: string[], io: Io): Promise<ExitCode> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? COMMANDS[rest[0] ?? ''] : undefined;
    io.out.write(topic ? commandHelp(rest[0]!, topic) : MAIN_HELP);
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  const command = COMMANDS[name];
  if (!command) return fail(io, new CliError(`unknown command '${name}' (see ibg --help)`, EXIT.usage));
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: rest,
      options: { ...COMMON_OPTIONS, ...command.options },
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    return fail(io, new CliError(`${(err as Error).message} (see ibg ${name} --help)`, EXIT.usage));
  }
  if (values.help) {
    io.out.write(commandHelp(name, command));
    return EXIT.ok;
  }
  if (positionals.length !== command.positionals) {
    return fail(io, new CliError(`usage: ibg ${command.usage}`, EXIT.usage));
  }
  const ctx: Context = { io, json: values.json === true, client: () => clientFrom(io.env) };
  try {
    return await command.run(ctx, values, positionals);
  } catch (err) {
    return fail(io, err);
  }
}

function commandHelp(name: string, c: Command): string {
  return `usage: ibg ${c.usage}\n\n${c.help}\n\n(ibg --help lists the environment variables and exit codes; ${name} takes --json and --help.)\n`;
}

function fail(io: Io, err: unknown): ExitCode {
  if (err instanceof CliError) {
    io.err.write(`ibg: ${err.message}\n`);
    return err.exitCode;
  }
  io.err.write(`ibg: ${(err as Error)?.stack ?? String(err)}\n`);
  return EXIT.usage;
}

function clientFrom(env: NodeJS.ProcessEnv): GatewayClient {
  const base = env.IBG_BASE_URL || `http://127.0.0.1:${env.PORT || 8080}`;
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    throw new CliError(`IBG_BASE_URL is not a URL: ${base}`, EXIT.usage);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new CliError(`IBG_BASE_URL must be http(s): ${base}`, EXIT.usage);
  }
  const key = env.IBG_API_KEY;
  if (!key) throw new CliError('IBG_API_KEY is not set: export your API key (sk-...)', EXIT.auth);
  return new GatewayClient(base, key);
}

/** A missing, unreadable or non-regular file is refused here, before anything is sent. */
async function checkReadable(file: string): Promise<void> {
  try {
    const stat = await fsp.stat(file);
    if (!stat.isFile()) throw new CliError(`${file} is not a file`, EXIT.rejected);
    await fsp.access(file, fs.constants.R_OK);
  } catch (err) {
    if (err instanceof CliError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
    throw new CliError(`cannot read ${file}: ${why}`, EXIT.rejected);
  }
}

/**
 * Waits with the progress view; Ctrl-C leaves the batch running (it is the service's, not this
 * process's) and says how to come back to it.
 */
async function waitWithProgress(ctx: Context, client: GatewayClient, id: string): Promise<Batch> {
  const view: ProgressView = progressView(ctx.io.err);
  const onInterrupt = () => {
    view.stop();
    ctx.io.err.write(`\n${id} keeps running: ibg status ${id}, ibg cancel ${id}\n`);
    process.exit(130);
  };
  process.once('SIGINT', onInterrupt);
  try {
    return await waitForBatch(client, id, view);
  } finally {
    view.stop();
    process.off('SIGINT', onInterrupt);
  }
}

/**
 * After a wait: the summary, the results when asked for (also of a cancelled or expired batch:
 * what finished is in its files), and the exit code its end maps to.
 */
async function finish(ctx: Context, client: GatewayClient, batch: Batch, out: string | undefined): Promise<ExitCode> {
  print(ctx, ctx.json ? batch : outcome(batch));
  if (out !== undefined && (batch.output_file_id || batch.error_file_id)) {
    const summary = await downloadResults(client, batch, out);
    ctx.io.err.write(`${wrote(summary)}\n`);
  }
  return ending(ctx, batch);
}

/**
 * The exit code a finished batch maps to: 0 when completed, 3 when its lines failed validation,
 * 4 when it failed otherwise, expired or was cancelled; its errors go to stderr.
 */
function ending(ctx: Context, batch: Batch): ExitCode {
  if (batch.status === 'completed') return EXIT.ok;
  const errors = batch.errors?.data ?? [];
  for (const line of problems(errors)) ctx.io.err.write(`${line}\n`);
  const invalidLines = errors.some((e) => e.line !== null && e.line !== undefined);
  const exit = invalidLines ? EXIT.rejected : EXIT.batchFailed;
  ctx.io.err.write(`ibg: ${batch.id} ${batch.status}${invalidLines ? ': the file has invalid lines' : ''}\n`);
  return exit;
}

function print(ctx: Context, value: unknown): void {
  ctx.io.out.write(typeof value === 'string' ? `${value}\n` : `${JSON.stringify(value, null, 2)}\n`);
}

/** "batch_… completed: 2 of 3 requests succeeded, 1 failed; charged 7500 (pre-deducted 10000, refunded 2500)". */
function outcome(b: Batch): string {
  const c = b.request_counts;
  let s = `${b.id} ${b.status}: ${c.completed} of ${c.total} requests succeeded`;
  if (c.failed) s += `, ${c.failed} failed`;
  if (b.billing.settled !== null) {
    s += `; charged ${b.billing.settled} (pre-deducted ${b.billing.pre_deducted}, refunded ${b.billing.refunded})`;
  }
  return s;
}

function wrote(s: { dir: string; lines: number; images: number; errorLines: number }): string {
  return `wrote ${s.images} image${s.images === 1 ? '' : 's'} of ${s.lines} line${s.lines === 1 ? '' : 's'} to ${s.dir}; ${s.errorLines} line${s.errorLines === 1 ? '' : 's'} in ${s.dir}/errors.jsonl`;
}

const MAX_PROBLEMS_SHOWN = 20;

function problems(errors: NonNullable<Batch['errors']>['data']): string[] {
  const lines = errors.slice(0, MAX_PROBLEMS_SHOWN).map((e) => {
    const where = e.line !== null && e.line !== undefined ? `line ${e.line}: ` : '';
    return `  ${where}${e.code}: ${e.message}${e.param ? ` (${e.param})` : ''}`;
  });
  if (errors.length > MAX_PROBLEMS_SHOWN) {
    lines.push(`  … and ${errors.length - MAX_PROBLEMS_SHOWN} more (ibg status ID --json)`);
  }
  return lines;
}

function describe(b: Batch): string {
  const c = b.request_counts;
  const rows: Array<[string, string | null]> = [
    ['model', b.model],
    ['requests', `${c.total} total: ${c.completed} completed, ${c.failed} failed`],
    ['created', time(b.created_at)],
    ['input', b.input_file_id],
    ['output', b.output_file_id],
    ['errors', b.error_file_id],
    [
      'billing',
      `pre-deducted ${b.billing.pre_deducted}` +
        (b.billing.settled !== null ? `, settled ${b.billing.settled}, refunded ${b.billing.refunded}` : ''),
    ],
    ['metadata', b.metadata && Object.keys(b.metadata).length ? JSON.stringify(b.metadata) : null],
  ];
  const lines = [`${b.id} ${b.status}`];
  for (const [label, value] of rows) if (value !== null) lines.push(`  ${label.padEnd(9)} ${value}`);
  const errors = b.errors?.data ?? [];
  if (errors.length) lines.push('  problems:', ...problems(errors).map((l) => `  ${l}`));
  return lines.join('\n');
}

function table(batches: Batch[]): string {
  const rows = [
    ['ID', 'STATUS', 'DONE/TOTAL', 'FAILED', 'CREATED'],
    ...batches.map((b) => {
      const c = b.request_counts;
      return [b.id, b.status, `${c.completed + c.failed}/${c.total}`, String(c.failed), time(b.created_at)];
    }),
  ];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows
    .map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]))).join('  '))
    .join('\n');
}

/** Unix seconds as "2026-11-22 10:04:05Z" (UTC, so the output is the same wherever it runs). */
function time(seconds: number): string {
  return `${new Date(seconds * 1000).toISOString().slice(0, 19).replace('T', ' ')}Z`;
}
