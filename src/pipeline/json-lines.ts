import readline from 'node:readline';
import type { Readable } from 'node:stream';

/**
 * The non-blank lines of a JSONL stream, parsed, with their 1-based physical line numbers
 * and 0-based request index. Tolerates a UTF-8 BOM and CRLF exactly as validation does, so
 * a request's index means the same thing in every step.
 */
export async function* readJsonLines<T = unknown>(
  input: Readable,
): AsyncGenerator<{ line: number; index: number; value: T }> {
  const rl = readline.createInterface({ input, crlfDelay: Infinity });
  let line = 0;
  let index = 0;
  for await (let text of rl) {
    line++;
    if (line === 1 && text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    if (!text.trim()) continue;
    yield { line, index: index++, value: JSON.parse(text) as T };
  }
}
