import { keysetList } from '../db/keyset-list.ts';
import type { Db } from '../db/pool.ts';

export const FILE_PURPOSES = ['batch', 'vision', 'image_batch', 'batch_output', 'batch_error'] as const;
export type FilePurpose = (typeof FILE_PURPOSES)[number];

export interface FileRow {
  id: string;
  userId: number;
  purpose: FilePurpose;
  filename: string;
  bytes: number;
  mimeType: string;
  objectKey: string;
  /** Pixel size of a vision image; null for other files. */
  width: number | null;
  height: number | null;
  createdAt: Date;
  /** When the retention sweep deletes it; null = kept until deleted. */
  expiresAt: Date | null;
  /** Objects that go with the file when it is deleted or expires (a url-mode output's images). */
  companionPrefix: string | null;
}

const fileColumns = `id, user_id AS "userId", purpose, filename, bytes, mime_type AS "mimeType", object_key AS "objectKey", width, height, created_at AS "createdAt", expires_at AS "expiresAt", companion_prefix AS "companionPrefix"`;

export type NewFile = Omit<FileRow, 'createdAt' | 'width' | 'height' | 'expiresAt' | 'companionPrefix'> & {
  width?: number;
  height?: number;
  /** The file expires this long after its `created_at` (exactly: OpenAI clients add them up); null = never. */
  retentionMs?: number | null;
  companionPrefix?: string | null;
};

export async function insertFile(db: Db, f: NewFile): Promise<FileRow> {
  const { rows } = await db.query<FileRow>(
    `INSERT INTO files (id, user_id, purpose, filename, bytes, mime_type, object_key, width, height, expires_at, companion_prefix)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + make_interval(secs => $10::double precision / 1000), $11)
     RETURNING ${fileColumns}`,
    [
      f.id,
      f.userId,
      f.purpose,
      f.filename,
      f.bytes,
      f.mimeType,
      f.objectKey,
      f.width ?? null,
      f.height ?? null,
      f.retentionMs ?? null,
      f.companionPrefix ?? null,
    ],
  );
  return rows[0];
}

/** Not deleted and not past its expiry (the sweep may not have removed it yet). */
const live = `deleted_at IS NULL AND (expires_at IS NULL OR expires_at > now())`;

/**
 * A live file of this user; another user's file is indistinguishable from a missing one.
 * `lock` takes a row lock: `share` while a batch is made from it, `update` to delete it.
 */
export async function findUserFile(
  db: Db,
  userId: number,
  id: string,
  opts: { lock?: 'share' | 'update' } = {},
): Promise<FileRow | null> {
  const lock = opts.lock === 'share' ? 'FOR SHARE' : opts.lock === 'update' ? 'FOR UPDATE' : '';
  const { rows } = await db.query<FileRow>(
    `SELECT ${fileColumns} FROM files WHERE id = $1 AND user_id = $2 AND ${live} ${lock}`,
    [id, userId],
  );
  return rows[0] ?? null;
}

/**
 * A batch's input file as the pipeline reads it: expiry does not apply (the retention sweep
 * never removes the input of an unfinished batch, and a finished one may still be stitched).
 */
export async function findBatchInputFile(db: Db, userId: number, id: string): Promise<FileRow | null> {
  const { rows } = await db.query<FileRow>(
    `SELECT ${fileColumns} FROM files WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL`,
    [id, userId],
  );
  return rows[0] ?? null;
}

/** OpenAI's file list, after the cursor file: one index seek per form (see keysetList). */
export async function listUserFiles(
  db: Db,
  userId: number,
  opts: { purpose: FilePurpose | null; limit: number; after: string | null; order: 'asc' | 'desc' },
): Promise<FileRow[]> {
  const { rows } = await db.query<FileRow>(
    keysetList({
      name: 'list-user-files',
      table: 'files',
      columns: fileColumns,
      live,
      userId,
      filter: opts.purpose === null ? null : { column: 'purpose', value: opts.purpose },
      after: opts.after,
      limit: opts.limit,
      order: opts.order,
    }),
  );
  return rows;
}

export async function fileExistsForUser(db: Db, userId: number, id: string): Promise<boolean> {
  const { rowCount } = await db.query(`SELECT 1 FROM files WHERE id = $1 AND user_id = $2 AND ${live}`, [id, userId]);
  return rowCount === 1;
}

/** The id of an unfinished batch that reads this file, if any. */
export async function openBatchReading(db: Db, fileId: string): Promise<string | null> {
  const { rows } = await db.query<{ id: string }>(
    `SELECT id FROM batches
      WHERE input_file_id = $1 AND deleted_at IS NULL AND status IN ('validating', 'in_progress', 'finalizing', 'cancelling')
      LIMIT 1`,
    [fileId],
  );
  return rows[0]?.id ?? null;
}

/**
 * Marks up to `limit` files past their expiry deleted and returns them (their objects are removed
 * next). The input of an unfinished batch waits until the batch has finished.
 */
export async function expireDueFiles(db: Db, limit: number): Promise<FileRow[]> {
  const { rows } = await db.query<FileRow>(
    `UPDATE files SET deleted_at = now()
      WHERE id IN (
        SELECT f.id FROM files f
         WHERE f.deleted_at IS NULL AND f.expires_at <= now()
           AND NOT EXISTS (SELECT 1 FROM batches b
                            WHERE b.input_file_id = f.id AND b.deleted_at IS NULL
                              AND b.status IN ('validating', 'in_progress', 'finalizing', 'cancelling'))
         ORDER BY f.expires_at
         LIMIT $1
         FOR UPDATE SKIP LOCKED)
      RETURNING ${fileColumns}`,
    [limit],
  );
  return rows;
}

/** Which of `ids` are live vision files of this user (one query for a chunk of ids). */
export async function findOwnedVisionFiles(db: Db, userId: number, ids: string[]): Promise<FileRow[]> {
  const { rows } = await db.query<FileRow>(
    `SELECT ${fileColumns} FROM files
      WHERE id = ANY($1::text[]) AND user_id = $2 AND purpose = 'vision' AND ${live}`,
    [ids, userId],
  );
  return rows;
}

export async function markFilesDeleted(db: Db, ids: string[]): Promise<FileRow[]> {
  const { rows } = await db.query<FileRow>(
    `UPDATE files SET deleted_at = coalesce(deleted_at, now()) WHERE id = ANY($1::text[]) RETURNING ${fileColumns}`,
    [ids],
  );
  return rows;
}
