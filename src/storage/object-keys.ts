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

/** The output and error files of one finalize run (`run` keeps a redelivered run off the winner's files). */
export const resultKeys = (userId: number, batchId: string, run: string) => {
  const prefix = batchPrefix(userId, batchId);
  return { output: `${prefix}output-${run}.jsonl`, errors: `${prefix}errors-${run}.jsonl` };
};
