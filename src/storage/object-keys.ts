/**
 * Every object key the service writes, in one place. Keys start with the tenant's prefix, so one
 * user's objects never share a path with another's, and deleting a batch is deleting a prefix.
 */
export const tenantPrefix = (userId: number) => `tenants/${userId}/`;

/** An uploaded file (vision image or batch input). */
export const uploadKey = (userId: number, fileId: string) => `${tenantPrefix(userId)}files/${fileId}`;

/** A batch's staging inputs, Vertex outputs and result files. */
export const batchPrefix = (userId: number, batchId: string) => `${tenantPrefix(userId)}batches/${batchId}/`;

/** One shard's Vertex input, its manifest, and the directory Vertex writes predictions under. */
export const shardKeys = (userId: number, batchId: string, seq: number) => {
  const dir = `${batchPrefix(userId, batchId)}shards/${String(seq).padStart(4, '0')}/`;
  return { dir, input: `${dir}input.jsonl`, manifest: `${dir}manifest.jsonl`, output: `${dir}output` };
};

/**
 * The output and error files of one finalize run, and the prefix of its url-mode images (`run`
 * keeps a redelivered run off the winner's objects).
 */
export const resultKeys = (userId: number, batchId: string, run: string) => {
  const prefix = batchPrefix(userId, batchId);
  return {
    output: `${prefix}output-${run}.jsonl`,
    errors: `${prefix}errors-${run}.jsonl`,
    images: `${prefix}images-${run}/`,
  };
};

/** File extensions of the image types a model returns; anything else is stored as `.bin`. */
export const IMAGE_EXTENSIONS: Record<string, string> = {
  'image/png': 'png',
  'image/jpeg': 'jpg',
  'image/webp': 'webp',
};

/** `image/png; foo=bar` → `image/png`. */
const bareType = (mimeType: string) => mimeType.split(';')[0].trim().toLowerCase();

/** The Content-Type a url-mode image is stored and served with: one of the image types, else opaque bytes. */
export const imageContentType = (mimeType: string) =>
  IMAGE_EXTENSIONS[bareType(mimeType)] ? bareType(mimeType) : 'application/octet-stream';

/** The image type of a key `imageKey` or `imageJobImageKey` made, by its extension; else opaque bytes. */
export const imageTypeOfKey = (key: string) =>
  Object.entries(IMAGE_EXTENSIONS).find(([, ext]) => key.toLowerCase().endsWith(`.${ext}`))?.[0] ??
  'application/octet-stream';

/** One url-mode image: under its run's `images` prefix, named by its output line's id and image index. */
export const imageKey = (imagesPrefix: string, requestId: string, img: number, mimeType: string) =>
  `${imagesPrefix}${requestId}-${img}.${IMAGE_EXTENSIONS[bareType(mimeType)] ?? 'bin'}`;

/** An image job's stored inputs (edit images, fetched URLs) and the images it made. */
export const imageJobPrefix = (userId: number, jobId: string) => `${tenantPrefix(userId)}jobs/${jobId}/`;
export const imageJobInputKey = (userId: number, jobId: string, name: string) =>
  `${imageJobPrefix(userId, jobId)}inputs/${name}`;
export const imageJobImageKey = (userId: number, jobId: string, index: number, mimeType: string) =>
  `${imageJobPrefix(userId, jobId)}images/${index}.${IMAGE_EXTENSIONS[bareType(mimeType)] ?? 'bin'}`;
