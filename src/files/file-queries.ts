import type { Db } from '../db/pool.ts';

export type FilePurpose = 'vision' | 'image_batch' | 'batch' | 'batch_output' | 'batch_error';

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
  expiresAt?: Date | null;
  companionPrefix?: string | null;
};

export async function insertFile(db: Db, f: NewFile): Promise<FileRow> {
  const { rows } = await db.query<FileRow>(
    `INSERT INTO files (id, user_id, purpose, filename, bytes, mime_type, object_key, width, height, expires_at, companion_prefix)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ${fileColumns}`,
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
      f.expiresAt ?? null,
      f.companionPrefix ?? null,
    ],
  );
  return rows[0];
}

/** A live file of this user; another user's file is indistinguishable from a missing one. */
export async function findUserFile(db: Db, userId: number, id: string): Promise<FileRow | null> {
  const { rows } = await db.query<FileRow>(
    `SELECT ${fileColumns} FROM files WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL`,
    [id, userId],
  );
  return rows[0] ?? null;
}

/** Which of `ids` are live vision files of this user (one query for a chunk of ids). */
export async function findOwnedVisionFiles(db: Db, userId: number, ids: string[]): Promise<FileRow[]> {
  const { rows } = await db.query<FileRow>(
    `SELECT ${fileColumns} FROM files
      WHERE id = ANY($1::text[]) AND user_id = $2 AND purpose = 'vision' AND deleted_at IS NULL`,
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
