import { pino } from 'pino';

/**
 * The service's one logger (pino): JSON lines on stdout, one object per line with `time` (ISO
 * 8601), `level` (its name) and `msg`, plus the fields of the call; errors go under `err` with
 * their stack. On a terminal (not in tests) the lines are pretty-printed instead. Call it the pino
 * way, fields first: `log.info({ batchId }, 'batch status changed')`.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

export type Logger = pino.Logger;

/**
 * A jest worker itself (the service runs inside the tests' process there), not a service process
 * a test started: those inherit JEST_WORKER_ID too, and must write as deployed.
 */
const inJest = process.env.JEST_WORKER_ID !== undefined && process.argv.some((arg) => arg.includes('jest'));
const pretty = Boolean(process.stdout.isTTY) && !inJest;

/**
 * pino's ISO time, made once per millisecond: a busy process writes many lines per millisecond,
 * and `toISOString` was a few µs of every request's access line.
 */
let madeAt = -1;
let made = '';
function isoTime(): string {
  const now = Date.now();
  if (now !== madeAt) {
    madeAt = now;
    made = `,"time":"${new Date(now).toISOString()}"`;
  }
  return made;
}

/**
 * Where lines go. A write per line made every request pay a system call (~10 µs) on the event
 * loop; lines are written asynchronously instead, those logged while a write is under way going
 * out together with the next. pino flushes what is pending when the process exits (also after an
 * uncaught exception); a SIGKILL or a fatal abort (out of memory) can lose the last few
 * milliseconds of lines. Under jest the service runs inside the test process: there lines go
 * through process.stdout, where tests read them.
 */
function destination() {
  if (pretty) return undefined;
  if (inJest) return process.stdout;
  return pino.destination({ dest: 1, sync: false });
}

export const log: Logger = pino(
  {
    // `info` until the process has read its configuration (LOG_LEVEL) and called setLogLevel.
    level: 'info',
    base: { pid: process.pid },
    timestamp: isoTime,
    formatters: { level: (label) => ({ level: label }) },
    ...(pretty
      ? {
          transport: {
            target: 'pino-pretty',
            options: { colorize: true, singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid' },
          },
        }
      : {}),
  },
  destination(),
);

export function setLogLevel(level: LogLevel) {
  log.level = level;
}

const REQUEST_LOG = Symbol('request logger');

/**
 * A request's logger: every line it writes carries the request's `reqId` (the id the HTTP layer
 * gave it and sent back as `X-Request-Id`). Made on first use: most requests log nothing else.
 */
export function requestLog(req: object): Logger {
  const r = req as { id?: string; [REQUEST_LOG]?: Logger };
  if (r.id === undefined) return log;
  r[REQUEST_LOG] ??= log.child({ reqId: r.id });
  return r[REQUEST_LOG];
}
