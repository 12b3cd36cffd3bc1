import { afterCommit, type Db } from '../db/pool.ts';
import { log } from '../logger.ts';

export type ShardStatus = 'staged' | 'submitted' | 'done';

export interface ShardRow {
  id: string;
  batchId: string;
  seq: number;
  model: string;
  firstLine: number;
  requestCount: number;
  imageCount: number;
  inputUri: string;
  outputPrefix: string;
  status: ShardStatus;
  vertexJob: string | null;
  vertexState: string | null;
  outputDir: string | null;
  imagesSucceeded: number;
  imagesFailed: number;
  error: { code: number | string; message: string } | null;
  polls: number;
}

const shardColumns = `id, batch_id AS "batchId", seq, model, first_line AS "firstLine", request_count AS "requestCount",
  image_count AS "imageCount", input_uri AS "inputUri", output_prefix AS "outputPrefix", status,
  vertex_job AS "vertexJob", vertex_state AS "vertexState", output_dir AS "outputDir",
  images_succeeded AS "imagesSucceeded", images_failed AS "imagesFailed", error, polls`;

export type NewShard = Pick<
  ShardRow,
  'id' | 'batchId' | 'seq' | 'model' | 'firstLine' | 'requestCount' | 'imageCount' | 'inputUri' | 'outputPrefix'
>;

export async function insertShard(db: Db, s: NewShard): Promise<void> {
  await db.query(
    `INSERT INTO shards (id, batch_id, seq, model, first_line, request_count, image_count, input_uri, output_prefix)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING`,
    [s.id, s.batchId, s.seq, s.model, s.firstLine, s.requestCount, s.imageCount, s.inputUri, s.outputPrefix],
  );
}

export async function findShard(db: Db, id: string): Promise<ShardRow | null> {
  const { rows } = await db.query<ShardRow>(`SELECT ${shardColumns} FROM shards WHERE id = $1`, [id]);
  return rows[0] ?? null;
}

export async function listShards(db: Db, batchId: string): Promise<ShardRow[]> {
  const { rows } = await db.query<ShardRow>(`SELECT ${shardColumns} FROM shards WHERE batch_id = $1 ORDER BY seq`, [
    batchId,
  ]);
  return rows;
}

/** staged → submitted, once: the Vertex job it names is the shard's only job. */
export async function markSubmitted(db: Db, id: string, vertexJob: string): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE shards SET status = 'submitted', vertex_job = $2, updated_at = now() WHERE id = $1 AND status = 'staged'`,
    [id, vertexJob],
  );
  return rowCount === 1;
}

/** What the last look that saw a change (of state or counts) saw of a running job; `polls` counts those looks. */
export async function recordProgress(
  db: Db,
  id: string,
  p: { state: string; succeeded: number; failed: number },
): Promise<void> {
  const { rows } = await db.query<StateChange>(
    `UPDATE shards SET vertex_state = $2, images_succeeded = $3, images_failed = $4, polls = polls + 1, updated_at = now()
       FROM (SELECT vertex_state AS previous_state FROM shards WHERE id = $1 FOR UPDATE) previous
      WHERE id = $1 AND status = 'submitted'
     RETURNING ${stateChangeColumns}`,
    [id, p.state, p.succeeded, p.failed],
  );
  logStateChange(db, id, rows[0]);
}

/** staged → done: a shard cancelled before it was submitted (never one that has a job). */
export async function markNeverSubmitted(db: Db, id: string): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE shards SET status = 'done', vertex_state = 'NOT_SUBMITTED', updated_at = now() WHERE id = $1 AND status = 'staged'`,
    [id],
  );
  return rowCount === 1;
}

/** submitted|staged → done, once, with where its output is (null when it never ran). */
export async function markDone(
  db: Db,
  id: string,
  end: { state: string; outputDir: string | null; error: ShardRow['error']; succeeded: number; failed: number },
): Promise<boolean> {
  const { rows } = await db.query<StateChange>(
    `UPDATE shards SET status = 'done', vertex_state = $2, output_dir = $3, error = $4,
            images_succeeded = $5, images_failed = $6, updated_at = now()
       FROM (SELECT vertex_state AS previous_state FROM shards WHERE id = $1 FOR UPDATE) previous
      WHERE id = $1 AND status <> 'done'
     RETURNING ${stateChangeColumns}`,
    [id, end.state, end.outputDir, end.error ?? null, end.succeeded, end.failed],
  );
  logStateChange(db, id, rows[0]);
  return rows.length === 1;
}

/** A shard's Vertex job state before and after an update (the row as it was, locked, gives the first). */
interface StateChange {
  batchId: string;
  vertexJob: string | null;
  previousState: string | null;
  state: string;
}
const stateChangeColumns = `batch_id AS "batchId", vertex_job AS "vertexJob",
  previous.previous_state AS "previousState", vertex_state AS "state"`;

/** One info line per state change of a Vertex job (as the polls see it), once it has committed. */
function logStateChange(db: Db, shardId: string, change: StateChange | undefined) {
  if (!change || change.previousState === change.state) return;
  const { batchId, vertexJob, previousState, state } = change;
  afterCommit(db, () =>
    log.info({ batchId, shardId, vertexJob, from: previousState, to: state }, 'vertex job state changed'),
  );
}

/**
 * request_counts of a running batch from its shards' image counts, in one statement. Vertex
 * counts images; a request of n images counts once its share of images does: an estimate
 * until stitching gives the exact numbers.
 */
export async function refreshLiveCounts(db: Db, batchId: string): Promise<void> {
  await db.query(
    `UPDATE batches b
        SET request_completed = c.completed, request_failed = c.failed
       FROM (SELECT least(request_total, floor(t.succeeded * request_total::numeric / image_total)) AS completed,
                    least(request_total, floor(t.failed * request_total::numeric / image_total)) AS failed
               FROM batches,
                    (SELECT coalesce(sum(images_succeeded), 0) AS succeeded, coalesce(sum(images_failed), 0) AS failed
                       FROM shards WHERE batch_id = $1) t
              WHERE id = $1 AND image_total > 0) c
      WHERE b.id = $1 AND b.status IN ('in_progress', 'cancelling')
        -- Unchanged counts write nothing: no dead row, and no notice that drops the user's cached answers.
        AND (b.request_completed, b.request_failed) IS DISTINCT FROM (c.completed, c.failed)`,
    [batchId],
  );
}

/** Vertex jobs running now, across every batch: shards submitted and not yet done. */
export async function countShardsInFlight(db: Db): Promise<number> {
  const { rows } = await db.query<{ count: number }>(
    "SELECT count(*)::int AS count FROM shards WHERE status = 'submitted'",
  );
  return rows[0].count;
}

/** The shards of these batches, where the batch has no outcome decided (no expiry or failure under way). */
export async function listShardStates(
  db: Db,
  batchIds: string[],
): Promise<Array<{ id: string; batchId: string; status: ShardStatus }>> {
  const { rows } = await db.query<{ id: string; batchId: string; status: ShardStatus }>(
    `SELECT s.id, s.batch_id AS "batchId", s.status FROM shards s JOIN batches b ON b.id = s.batch_id
      WHERE s.batch_id = ANY($1) AND b.outcome IS NULL`,
    [batchIds],
  );
  return rows;
}
