-- Counts by status at any size. `GET /admin/system` and the `ibg_batches{status}` gauge (read at
-- every metrics scrape) counted with `count(*) … GROUP BY status` over the whole table: 3.5 s at
-- 1.5 M batches. They now read a few rows: status_counts, plus the deltas not folded into it yet.
--
-- Why not one counter row per status, updated by a trigger: every status change would update the
-- row of its status and hold that row's lock until its transaction ends, so every transaction that
-- creates, finishes or deletes a batch would wait for every other one on a handful of hot rows (and
-- two that touch two statuses in opposite orders would deadlock). Instead the triggers only
-- INSERT: one row per status a statement changed (+k / -k) into status_count_deltas, which no
-- other writer ever waits for.
--
-- Exact: a count is the sum of status_counts and of the deltas, read in one statement, so in one
-- snapshot: what count(*) would say in it (a change counts once its transaction commits, never if
-- it rolls back). Folding (foldStatusCounts in src/db/status-count-queries.ts: by the sweep, and by
-- a reader that finds many deltas) moves the deltas into status_counts in one statement, a DELETE …
-- RETURNING feeding an upsert, so a reader sees each delta on one side or the other, never both or
-- neither.
--
-- The triggers run once per statement, with transition tables: a bulk insert or update of a
-- million rows writes a row per status, not a million (a trigger with transition tables takes one
-- event, hence three per table). Batches count while not deleted, as before; image jobs always.
-- The triggers come before the backfill: CREATE TRIGGER waits for the writers in flight and keeps
-- new ones out until this migration commits, so no change falls between the two.
CREATE TABLE status_counts (
  -- The counted table: 'batches' or 'image_jobs'.
  kind   text NOT NULL,
  status text NOT NULL,
  n      bigint NOT NULL,
  PRIMARY KEY (kind, status)
);

-- Insert-only between folds; no key, no index: read and emptied whole.
CREATE TABLE status_count_deltas (
  kind   text NOT NULL,
  status text NOT NULL,
  n      bigint NOT NULL
);

CREATE FUNCTION count_batch_statuses() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO status_count_deltas (kind, status, n)
    SELECT 'batches', status, count(*) FROM new_rows WHERE deleted_at IS NULL GROUP BY status;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO status_count_deltas (kind, status, n)
    SELECT 'batches', status, -count(*) FROM old_rows WHERE deleted_at IS NULL GROUP BY status;
  ELSE
    INSERT INTO status_count_deltas (kind, status, n)
    SELECT 'batches', status, sum(d) FROM (
      SELECT status, -1 AS d FROM old_rows WHERE deleted_at IS NULL
      UNION ALL
      SELECT status, 1 FROM new_rows WHERE deleted_at IS NULL
    ) changed
    GROUP BY status HAVING sum(d) <> 0;
  END IF;
  RETURN NULL;
END
$$;

CREATE FUNCTION count_image_job_statuses() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO status_count_deltas (kind, status, n)
    SELECT 'image_jobs', status, count(*) FROM new_rows GROUP BY status;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO status_count_deltas (kind, status, n)
    SELECT 'image_jobs', status, -count(*) FROM old_rows GROUP BY status;
  ELSE
    INSERT INTO status_count_deltas (kind, status, n)
    SELECT 'image_jobs', status, sum(d) FROM (
      SELECT status, -1 AS d FROM old_rows
      UNION ALL
      SELECT status, 1 FROM new_rows
    ) changed
    GROUP BY status HAVING sum(d) <> 0;
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER batches_count_inserted AFTER INSERT ON batches
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_batch_statuses();
CREATE TRIGGER batches_count_updated AFTER UPDATE ON batches
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_batch_statuses();
CREATE TRIGGER batches_count_deleted AFTER DELETE ON batches
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION count_batch_statuses();

CREATE TRIGGER image_jobs_count_inserted AFTER INSERT ON image_jobs
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_image_job_statuses();
CREATE TRIGGER image_jobs_count_updated AFTER UPDATE ON image_jobs
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_image_job_statuses();
CREATE TRIGGER image_jobs_count_deleted AFTER DELETE ON image_jobs
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION count_image_job_statuses();

INSERT INTO status_counts (kind, status, n)
SELECT 'batches', status, count(*) FROM batches WHERE deleted_at IS NULL GROUP BY status;
INSERT INTO status_counts (kind, status, n)
SELECT 'image_jobs', status, count(*) FROM image_jobs GROUP BY status;
