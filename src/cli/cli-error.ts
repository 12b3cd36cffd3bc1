/**
 * Exit codes of the command-line client. Scripts branch on them, so they are part of its
 * interface (README "Command-line client" lists them): never renumber one.
 */
export const EXIT = {
  ok: 0,
  /** Bad arguments, an unknown command, or an unexpected local failure. */
  usage: 1,
  /** No or wrong API key, or the key may not do this (401/403, e.g. the privacy policy not accepted). */
  auth: 2,
  /** The request or its input was refused: a missing or unreadable file, a 4xx answer, a batch whose lines failed validation. */
  rejected: 3,
  /** A waited-for batch ended failed, expired or cancelled. */
  batchFailed: 4,
  /** The service could not be reached, or answered with a server error (5xx). */
  unavailable: 5,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** A failure to report on one line of stderr and to end the process with `exitCode`. */
export class CliError extends Error {
  readonly exitCode: ExitCode;

  constructor(message: string, exitCode: ExitCode) {
    super(message);
    this.exitCode = exitCode;
  }
}
