import { Readable } from 'node:stream';
import type { Pool } from '../db/pool.ts';
import { ApiError, notFound } from '../errors/api-error.ts';
import { looksLikeId } from '../ids.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import { parseRange } from './byte-range.ts';
import * as q from './file-queries.ts';

export type FileRow = q.FileRow;

export interface FileContent {
  file: FileRow;
  status: 200 | 206;
  headers: Record<string, string>;
  body: Readable;
}

export class FileService {
  private readonly pool: Pool;
  private readonly store: ObjectStore;

  constructor(deps: { pool: Pool; store: ObjectStore }) {
    this.pool = deps.pool;
    this.store = deps.store;
  }

  /** Records an uploaded reference image (already in the store, its type checked). */
  recordVision(file: Omit<q.NewFile, 'purpose'>): Promise<FileRow> {
    return q.insertFile(this.pool, { ...file, purpose: 'vision' });
  }

  async get(userId: number, id: string): Promise<FileRow> {
    const file = looksLikeId('file', id) ? await q.findUserFile(this.pool, userId, id) : null;
    if (!file) throw notFound('file', id, 'file_id');
    return file;
  }

  /** Streams a file's bytes, honouring a single `Range: bytes=a-b` (206) as HTTP allows. */
  async content(userId: number, id: string, rangeHeader: string | undefined): Promise<FileContent> {
    const file = await this.get(userId, id);
    const base = {
      'Content-Type': file.mimeType,
      'Accept-Ranges': 'bytes',
      'Content-Disposition': `attachment; filename="${file.filename.replace(/["\\\r\n]/g, '_')}"`,
    };
    const range = parseRange(rangeHeader, file.bytes);
    if (range === 'unsatisfiable') {
      throw new ApiError(
        'range_not_satisfiable',
        `The range '${rangeHeader}' is outside the file's ${file.bytes} bytes.`,
        'Range',
      ).withHeaders({ 'Content-Range': `bytes */${file.bytes}` });
    }
    if (!range) {
      const body = file.bytes === 0 ? emptyStream() : this.store.readStream(file.objectKey);
      return { file, status: 200, headers: { ...base, 'Content-Length': String(file.bytes) }, body };
    }
    return {
      file,
      status: 206,
      headers: {
        ...base,
        'Content-Length': String(range.end - range.start + 1),
        'Content-Range': `bytes ${range.start}-${range.end}/${file.bytes}`,
      },
      body: this.store.readStream(file.objectKey, range),
    };
  }
}

const emptyStream = () => Readable.from([]);
