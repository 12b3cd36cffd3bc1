/**
 * Walks the JSON lines of a file as bytes, without parsing them: it follows the structure only
 * (objects, arrays, keys, array indices) and hands the text of the string values the caller asks
 * for to a sink, piece by piece, as they stream by. Every other value is skipped where it lies.
 *
 * This is how the output file is read for its images: a b64_json line holds megabytes of base64
 * per image, which `JSON.parse` would turn into one string of that size; here the base64 is only
 * looked at (a few bytes, or streamed through a decoder) and never held. Memory stays the current
 * chunk plus the keys of the current path.
 *
 * Lenient by design: the files it reads are the service's own, so a byte that breaks the JSON
 * grammar is passed over rather than reported. A raw line feed always ends a line (JSON cannot
 * hold one inside a string), so a damaged line can never swallow the next one.
 */

/** Where a value is: object keys and array indices from the line's top-level value down. */
export type JsonPath = ReadonlyArray<string | number>;

/** Receives the raw text of one string value (escapes as written, without the quotes). */
export interface StringSink {
  piece(text: Buffer): void;
  end(): void;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const LF = 0x0a;
/** Keys longer than this are no key the caller can ask for: kept short, matched by nothing. */
const MAX_KEY_BYTES = 256;

type State = 'value' | 'key' | 'colon' | 'after' | 'string' | 'scalar';

export class JsonLineScanner {
  private readonly open: (path: JsonPath) => StringSink | null;
  private state: State = 'value';
  /** For each open container: true for an array. */
  private readonly arrays: boolean[] = [];
  /** For each open container: the key or index of the member being read. */
  private readonly path: Array<string | number> = [];
  private stringIsKey = false;
  private sink: StringSink | null = null;
  private keyBytes: Buffer[] = [];
  private keyLength = 0;
  /** A backslash ended the last piece: the next byte is escaped, whatever it is. */
  private escapePending = false;

  /** `open` is asked at the start of each string value whether (and where) its text should go. */
  constructor(open: (path: JsonPath) => StringSink | null) {
    this.open = open;
  }

  /**
   * Reads `chunk` from `from` on. Returns the index just past the line feed that ended a line
   * (the scanner is then ready for the next line), or -1 when the whole chunk was read without
   * a line ending.
   */
  scan(chunk: Buffer, from = 0): number {
    let i = from;
    while (i < chunk.length) {
      if (this.state === 'string') {
        i = this.inString(chunk, i);
        continue;
      }
      const c = chunk[i];
      if (c === LF) {
        this.reset();
        return i + 1;
      }
      if (c === 0x20 || c === 0x09 || c === 0x0d) {
        if (this.state === 'scalar') this.state = 'after';
        i++;
        continue;
      }
      switch (this.state) {
        case 'scalar':
          if (c === 0x2c || c === 0x7d || c === 0x5d) {
            this.state = 'after';
            continue; // the same byte again, as what follows the scalar
          }
          break;
        case 'value':
          if (c === 0x7b) this.push(false, null);
          else if (c === 0x5b) this.push(true, 0);
          else if (c === 0x5d && this.arrays.at(-1))
            this.pop(); // an empty array
          else if (c === QUOTE) this.startString(false);
          else this.state = 'scalar';
          break;
        case 'key':
          if (c === QUOTE) this.startString(true);
          else if (c === 0x7d) this.pop(); // an empty object
          break;
        case 'colon':
          if (c === 0x3a) this.state = 'value';
          break;
        case 'after':
          if (c === 0x2c && this.arrays.length) {
            const top = this.path.length - 1;
            if (this.arrays[top]) {
              this.path[top] = (this.path[top] as number) + 1;
              this.state = 'value';
            } else {
              this.state = 'key';
            }
          } else if ((c === 0x7d || c === 0x5d) && this.arrays.length) {
            this.pop();
          }
          break;
      }
      i++;
    }
    return -1;
  }

  /** Forgets the line read so far (its end, or a reader that starts over elsewhere). */
  reset(): void {
    if (this.state === 'string') this.sink?.end(); // a line cut inside a string: its sink still ends
    this.state = 'value';
    this.arrays.length = 0;
    this.path.length = 0;
    this.sink = null;
    this.escapePending = false;
  }

  /** Whether nothing of a line has been read since the last line ended. */
  get atLineStart(): boolean {
    return this.state === 'value' && this.arrays.length === 0;
  }

  private push(array: boolean, member: string | number | null): void {
    this.arrays.push(array);
    this.path.push(member ?? '');
    this.state = array ? 'value' : 'key';
  }

  private pop(): void {
    this.arrays.pop();
    this.path.pop();
    this.state = 'after';
  }

  private startString(isKey: boolean): void {
    this.state = 'string';
    this.stringIsKey = isKey;
    this.escapePending = false;
    if (isKey) {
      this.keyBytes = [];
      this.keyLength = 0;
    } else {
      this.sink = this.open(this.path);
    }
  }

  /** Reads string text from `i`; returns where reading goes on (past the closing quote, or the chunk's end). */
  private inString(chunk: Buffer, i: number): number {
    let at = i;
    if (this.escapePending) {
      // The escaped byte is text, even a quote; a line feed still ends the line (below).
      if (chunk[at] !== LF) {
        this.escapePending = false;
        at++;
      }
    }
    // Base64 has neither quotes nor backslashes: for a long image this is a few native scans per
    // chunk. The next quote is found first and the escapes and line feeds looked for only before
    // it, so that a short string costs its own length, not the rest of the chunk.
    for (;;) {
      const quote = chunk.indexOf(QUOTE, at);
      const inside = chunk.subarray(at, quote === -1 ? chunk.length : quote);
      const b = inside.indexOf(BACKSLASH);
      const l = inside.indexOf(LF);
      const backslash = b === -1 ? -1 : at + b;
      const lf = l === -1 ? -1 : at + l;
      if (backslash === -1 && lf === -1 && quote === -1) {
        this.text(chunk, i, chunk.length);
        return chunk.length;
      }
      if (backslash !== -1 && (lf === -1 || backslash < lf)) {
        if (backslash + 1 >= chunk.length) {
          this.escapePending = true;
          this.text(chunk, i, chunk.length);
          return chunk.length;
        }
        at = chunk[backslash + 1] === LF ? backslash + 1 : backslash + 2;
        continue;
      }
      if (lf !== -1) {
        // Not valid JSON: the string never closed. The line ends here all the same.
        this.text(chunk, i, lf);
        this.sink?.end();
        this.sink = null;
        this.state = 'after';
        return lf; // the main loop sees the line feed and ends the line
      }
      this.text(chunk, i, quote);
      this.endString();
      return quote + 1;
    }
  }

  private text(chunk: Buffer, start: number, end: number): void {
    if (end <= start) return;
    if (!this.stringIsKey) {
      this.sink?.piece(chunk.subarray(start, end));
    } else if (this.keyLength <= MAX_KEY_BYTES) {
      this.keyBytes.push(Buffer.from(chunk.subarray(start, end)));
      this.keyLength += end - start;
    }
  }

  private endString(): void {
    if (this.stringIsKey) {
      const raw = this.keyLength > MAX_KEY_BYTES ? null : Buffer.concat(this.keyBytes).toString('utf8');
      this.path[this.path.length - 1] = raw === null ? '\u0000too long' : (jsonStringText(raw) ?? '\u0000invalid');
      this.keyBytes = [];
      this.state = 'colon';
    } else {
      this.sink?.end();
      this.sink = null;
      this.state = 'after';
    }
  }
}

/** The string a JSON string's raw text (between the quotes) stands for, or null when it is not valid. */
function jsonStringText(raw: string): string | null {
  if (!raw.includes('\\')) return raw;
  try {
    return JSON.parse(`"${raw}"`) as string;
  } catch {
    return null;
  }
}

/** A sink that keeps the first `max` bytes of a string's raw text (enough for an id, a link, an image's magic bytes). */
export class CollectSink implements StringSink {
  private readonly max: number;
  private readonly parts: Buffer[] = [];
  private length = 0;
  /** More text came than was kept. */
  truncated = false;
  ended = false;

  constructor(max: number) {
    this.max = max;
  }

  piece(text: Buffer): void {
    const room = this.max - this.length;
    if (text.length > room) this.truncated = true;
    if (room <= 0) return;
    const kept = Buffer.from(text.subarray(0, room));
    this.parts.push(kept);
    this.length += kept.length;
  }

  end(): void {
    this.ended = true;
  }

  /** The raw text kept (escapes as written). */
  get raw(): Buffer {
    return Buffer.concat(this.parts);
  }

  /** The whole string, decoded; null when it was cut short or is not valid JSON text. */
  get value(): string | null {
    return this.truncated ? null : jsonStringText(this.raw.toString('utf8'));
  }
}
