import { Readable } from 'node:stream';
import type pg from 'pg';
import { type Pool, withTransaction } from '../db/pool.ts';
import { ApiError, notFound } from '../errors/api-error.ts';
import { looksLikeId } from '../ids.ts';
import { keysetPage, type Page } from '../keyset-page.ts';
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

  /**
   * Records an upload already in the store (a vision image with its type checked, or a JSONL for
   * a later batch). `within` runs in the same transaction (an idempotent answer kept with it).
   */
  record(file: q.NewFile, within?: (tx: pg.PoolClient, row: FileRow) => Promise<void>): Promise<FileRow> {
    return withTransaction(this.pool, async (tx) => {
      const row = await q.insertFile(tx, file);
      await within?.(tx, row);
      return row;
    });
  }

  async list(
    userId: number,
    opts: { purpose: q.FilePurpose | null; limit: number; after: string | null; order: 'asc' | 'desc' },
  ): Promise<Page<FileRow>> {
    return keysetPage({
      ...opts,
      what: 'one of your files',
      cursorExists: async (after) => looksLikeId('file', after) && q.fileExistsForUser(this.pool, userId, after),
      fetch: (limit) => q.listUserFiles(this.pool, userId, { ...opts, limit }),
    });
  }

  /**
   * Deletes a file and its objects. The input of an unfinished batch is refused (409
   * `file_in_use`): the row lock orders this against a batch being made from the file.
   */
  async delete(userId: number, id: string): Promise<void> {
    const file = await withTransaction(this.pool, async (tx) => {
      const row = looksLikeId('file', id) ? await q.findUserFile(tx, userId, id, { lock: 'update' }) : null;
      if (!row) throw notFound('file', id, 'file_id');
      const reader = await q.openBatchReading(tx, id);
      if (reader) {
        throw new ApiError(
          'file_in_use',
          `File ${id} is the input of batch ${reader}, which has not finished; cancel it or wait.`,
          'file_id',
        );
      }
      await q.markFilesDeleted(tx, [id]);
      return row;
    });
    await this.removeObjects([file]);
  }

  /** The retention sweep: files past `expires_at` are marked deleted, then their objects go. */
  async expireDue(limit: number): Promise<number> {
    const files = await q.expireDueFiles(this.pool, limit);
    await this.removeObjects(files);
    return files.length;
  }

  /**
   * Objects go after the commit that hid their files: a crash in between leaves only
   * unreachable objects, never a live record pointing at a missing one.
   */
  async removeObjects(files: FileRow[]): Promise<void> {
    for (const f of files) {
      await this.store.delete(f.objectKey);
      if (f.companionPrefix) await this.store.deletePrefix(f.companionPrefix);
    }
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
