import { pino } from 'pino';

/**
 * The service's one logger (pino): JSON lines on stdout, one object per line with `time` (ISO
 * 8601), `level` (its name) and `msg`, plus the fields of the call; errors go under `err` with
 * their stack. On a terminal (not in tests) the lines are pretty-printed instead. Call it the pino
 * way, fields first: `log.info({ batchId }, 'batch status changed')`.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

export type Logger = pino.Logger;

const pretty = Boolean(process.stdout.isTTY) && process.env.JEST_WORKER_ID === undefined;

export const log: Logger = pino(
  {
    // `info` until the process has read its configuration (LOG_LEVEL) and called setLogLevel.
    level: 'info',
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
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
  // Through process.stdout (synchronous for files and pipes): a process that exits right after
  // logging loses no line, and a test can read what was logged.
  pretty ? undefined : process.stdout,
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
