/**
 * Decodes base64 that arrives in pieces, as the raw text of a JSON string: the image of a
 * prediction, cut wherever the input stream's chunks happen to end. A piece need not hold a
 * whole number of 4-character quads (the rest waits for the next piece), and JSON may escape
 * characters (`\/` for `/`, some encoders do) with the escape itself cut in two.
 *
 * Strict where it matters: a character outside the base64 alphabet, data after the padding, or a
 * truncated end is an error, never bytes silently skipped — a url-mode image must be exactly the
 * image the model made. ASCII white space is skipped (MIME-style line breaks).
 */

export class InvalidBase64Error extends Error {
  constructor(message: string) {
    super(`invalid base64: ${message}`);
    this.name = 'InvalidBase64Error';
  }
}

const BACKSLASH = 0x5c;
const EQUALS = 0x3d;
const DASH = 0x2d;
const UNDERSCORE = 0x5f;
const U = 0x75;
const EMPTY = Buffer.alloc(0);
/** Characters decoded per call (a multiple of 4). */
const DECODE_SLICE = 16 * 1024;

/** JSON's one-character escapes (the byte after the backslash) and the byte each stands for. */
const SIMPLE_ESCAPES = new Map(
  Object.entries({ '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' }).map(([e, c]) => [
    e.charCodeAt(0),
    c.charCodeAt(0),
  ]),
);

/** 1: a base64 character; 2: white space, skipped; 0: anything else. */
const CLASS = new Uint8Array(256);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/') CLASS[c.charCodeAt(0)] = 1;
for (const c of ' \t\r\n') CLASS[c.charCodeAt(0)] = 2;

export class JsonBase64Decoder {
  private readonly target: Buffer | null;
  private written = 0;
  /** Base64 characters (at most 3) that do not make a whole quad yet. */
  private carry = '';
  /** An escape sequence cut at the end of the last piece. */
  private pendingEscape: Buffer | null = null;
  /** `=` seen: the data has ended, only more `=` (or white space) may follow. */
  private padding = 0;

  /**
   * With a `target`, the bytes go there, one after the other (one allocation for a whole image
   * instead of one per piece); it must hold 3/4 of the text's length. Without, each piece's bytes
   * are a Buffer of their own.
   */
  constructor(target: Buffer | null = null) {
    this.target = target;
  }

  /** Bytes put into the target so far. */
  get bytesWritten(): number {
    return this.written;
  }

  /** The bytes decoded from this piece (and what was carried over from the last one). */
  push(piece: Buffer): Buffer {
    let bytes = piece;
    if (this.pendingEscape !== null) {
      bytes = Buffer.concat([this.pendingEscape, piece]);
      this.pendingEscape = null;
    }
    if (bytes.indexOf(BACKSLASH) !== -1) bytes = this.unescape(bytes);
    // Fast path, native code only: a piece of nothing but the alphabet decodes to exactly 3/4 of
    // its length. Node's decoder skips characters outside the alphabet, which then shows as a
    // shorter result; it also takes base64url's `-` and `_`, so those are looked for first.
    // Padding at the very end of the piece (an image's last piece, usually) stays on this path.
    let body = bytes;
    let padding = 0;
    const eq = this.padding === 0 ? bytes.indexOf(EQUALS) : -1;
    if (eq !== -1 && bytes.length - eq <= 2) {
      body = bytes.subarray(0, eq);
      padding = bytes.length - eq;
      if (padding === 2 && bytes[eq + 1] !== EQUALS) body = bytes; // `=x`: the careful path says what is wrong
    }
    const plain =
      this.padding === 0 && body.indexOf(EQUALS) === -1 && body.indexOf(DASH) === -1 && body.indexOf(UNDERSCORE) === -1;
    const outs: Buffer[] = [];
    let done = 0;
    if (plain) {
      // In slices: the short-lived strings stay small, and V8's young generation with them.
      for (; done < body.length; done += DECODE_SLICE) {
        const out = this.decodeQuads(body.toString('latin1', done, Math.min(done + DECODE_SLICE, body.length)));
        if (out === null) break;
        outs.push(out);
      }
      if (done >= body.length) {
        this.padding = padding;
        return this.joined(outs);
      }
    }
    // The careful path, from the slice that did not decode cleanly on.
    this.carry = this.checkedCarry();
    const out = this.decodeQuads(this.alphabetOnly(bytes.subarray(done)));
    if (out === null) throw new Error('base64 decoder: a checked piece decoded short'); // cannot happen
    outs.push(out);
    return this.joined(outs);
  }

  /** Consecutive outputs of one piece as one Buffer: in the target they already are. */
  private joined(outs: Buffer[]): Buffer {
    if (outs.length === 1) return outs[0];
    if (this.target === null) return Buffer.concat(outs);
    const length = outs.reduce((sum, out) => sum + out.length, 0);
    return this.target.subarray(this.written - length, this.written);
  }

  /** The last bytes; throws when the base64 ends where it cannot (1 character of a quad, bad padding, a cut escape). */
  end(): Buffer {
    if (this.pendingEscape !== null) throw new InvalidBase64Error('the text ends inside an escape sequence');
    const rest = this.checkedCarry();
    if (rest.length === 1) throw new InvalidBase64Error('the text ends with a lone character');
    if (this.padding > 2 || (this.padding > 0 && (rest.length + this.padding) % 4 !== 0)) {
      throw new InvalidBase64Error('wrong padding');
    }
    this.carry = '';
    // Without padding, 2 or 3 trailing characters still decode (1 or 2 bytes).
    if (rest.length === 0) return EMPTY;
    const out = this.decodeText(rest, rest.length - 1);
    if (out === null) throw new Error('base64 decoder: checked characters decoded short'); // cannot happen
    return out;
  }

  /**
   * The carried characters, checked: the end of a fast-path piece is checked only once it makes
   * a quad (by the decoded length), so before the careful path and at the end it is checked here.
   */
  private checkedCarry(): string {
    let carry = '';
    for (let i = 0; i < this.carry.length; i++) {
      const kind = CLASS[this.carry.charCodeAt(i)];
      if (kind === 0) throw new InvalidBase64Error('a character is not base64');
      if (kind === 1) carry += this.carry[i];
    }
    return carry;
  }

  /** Decode the whole quads of the carried characters and `chars`; null when a character was not base64. */
  private decodeQuads(chars: string): Buffer | null {
    const text = this.carry.length === 0 ? chars : this.carry + chars;
    const whole = text.length - (text.length % 4);
    if (whole === 0) {
      this.carry = text;
      return EMPTY;
    }
    const out = this.decodeText(whole === text.length ? text : text.slice(0, whole), (whole / 4) * 3);
    if (out === null) return null;
    this.carry = text.slice(whole);
    return out;
  }

  /** `text` decoded, or null when it does not give exactly `expected` bytes (a character was not base64). */
  private decodeText(text: string, expected: number): Buffer | null {
    if (this.target === null) {
      const out = Buffer.from(text, 'base64');
      return out.length === expected ? out : null;
    }
    // Not advanced on failure: the careful path writes the same place again.
    const n = this.target.write(text, this.written, 'base64');
    if (n !== expected) return null;
    this.written += n;
    return this.target.subarray(this.written - n, this.written);
  }

  /** The piece's base64 characters, checked one by one: white space skipped, padding noted, anything else an error. */
  private alphabetOnly(bytes: Buffer): string {
    const out = Buffer.allocUnsafe(bytes.length);
    let n = 0;
    for (let i = 0; i < bytes.length; i++) {
      const c = bytes[i];
      const kind = CLASS[c];
      if (kind === 1) {
        if (this.padding > 0) throw new InvalidBase64Error('data after the padding');
        out[n++] = c;
      } else if (c === EQUALS) {
        this.padding++;
      } else if (kind !== 2) {
        throw new InvalidBase64Error(`character 0x${c.toString(16).padStart(2, '0')} is not base64`);
      }
    }
    return out.toString('latin1', 0, n);
  }

  /**
   * The piece with JSON escapes replaced by the bytes they stand for. An escape cut at the end
   * is kept for the next piece. What an escape gives is checked like any other byte, so an
   * escaped quote or a `\u00e9` is refused later as not base64.
   */
  private unescape(bytes: Buffer): Buffer {
    const parts: Buffer[] = [];
    let from = 0;
    for (let bs = bytes.indexOf(BACKSLASH); bs !== -1; bs = bytes.indexOf(BACKSLASH, from)) {
      parts.push(bytes.subarray(from, bs));
      const kind = bytes[bs + 1];
      if (kind === undefined || (kind === U && bs + 6 > bytes.length)) {
        this.pendingEscape = Buffer.from(bytes.subarray(bs));
        from = bytes.length;
        break;
      }
      if (kind === U) {
        const hex = bytes.toString('latin1', bs + 2, bs + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) throw new InvalidBase64Error(`bad escape \\u${hex}`);
        const code = Number.parseInt(hex, 16);
        // Anything past ASCII cannot be base64; 0xff stands for it and is refused as such.
        parts.push(Buffer.from([code < 0x80 ? code : 0xff]));
        from = bs + 6;
      } else {
        const byte = SIMPLE_ESCAPES.get(kind);
        if (byte === undefined) throw new InvalidBase64Error(`bad escape \\${String.fromCharCode(kind)}`);
        parts.push(Buffer.from([byte]));
        from = bs + 2;
      }
    }
    parts.push(bytes.subarray(from));
    return Buffer.concat(parts);
  }
}

/**
 * A JSON string's base64 text, in pieces, decoded piece by piece (never joined into one string).
 * Given the text's length, the bytes come as one Buffer (one allocation, filled piece by piece);
 * else as one Buffer per piece.
 */
export function decodeJsonBase64(pieces: Iterable<Buffer>, length?: number): Buffer[] {
  const target = length === undefined ? null : Buffer.allocUnsafe(Math.floor((length * 3) / 4));
  const decoder = new JsonBase64Decoder(target);
  const out: Buffer[] = [];
  for (const piece of pieces) {
    const bytes = decoder.push(piece);
    if (bytes.length > 0 && target === null) out.push(bytes);
  }
  const last = decoder.end();
  if (target !== null) return [target.subarray(0, decoder.bytesWritten)];
  if (last.length > 0) out.push(last);
  return out;
}
