-- The read path at a million batches per user. Every list is newest first with an `after`
-- cursor, so each list form must be one index seek that stops after `limit + 1` rows, whatever
-- the size of the user's history. Plans read with EXPLAIN ANALYZE on 1.5 M batches (1 M of one
-- user, 0.5 M of another, interleaved; 88 % completed, 8 % cancelled, 4 % expired, none failed)
-- and as many files:
--
-- * First page (`GET /v1/image-batches?limit=20`, `/v1/batches`): Index Scan on
--   batches_user_list (user_id, created_at DESC, id DESC), Index Cond user_id = $1, stopped by the
--   Limit after 21 rows: 0.2 ms. Already right.
-- * Deep cursor (`…&after=<id>`, halfway down): the cursor row is read once by primary key (an
--   InitPlan), and the page is the same index scan with ROW(created_at, id) < ROW(cursor) in its
--   Index Cond, i.e. a seek to the cursor, not a filter: 0.4 ms for 100 rows. (OFFSET, or a
--   cursor compared in a Filter, reads every row before it.)
-- * Status filter: before this file only batches_user_list served it, with `status = $2` as a
--   Filter, reading the user's rows until 21 matched: for a status the user has none of
--   (`status=failed`) that is every row, a Parallel Seq Scan of 2.4 s at 1 M. batches_user_status_list
--   below makes it one seek whatever the status: 0.1 ms for none, 0.4 ms for 20 expired batches
--   after a cursor halfway down (the cursor again in the Index Cond). For a status most of the
--   user's batches have (completed), the planner may still take batches_user_list with the
--   Filter, which reads ~24 rows for 20: as cheap. It decides by table-wide statistics, so a user
--   for whom a status is rare while the table is full of it is the case to watch: measured with a
--   50,000-batch user whose batches all failed asking for `completed`, it took the status index
--   (0.1 ms). (Extended statistics on (user_id, status) were tried and dropped: with every pair in
--   their MCV list, the planner estimated no row for an absent pair and passed over this index
--   for a bitmap scan of the user's history plus a sort.)
-- * Files (`GET /v1/files?purpose=`): the same shape; files_user_list with `purpose` as a Filter
--   read all of a user's files for a purpose they have none of (a Parallel Seq Scan, 0.8 s at 1 M).
-- * Image jobs (`GET /v1/jobs?status=`): the same shape and the same fix.
--
-- Building these takes a lock that holds writes to the table for the build, ~10 s per million
-- rows (the migration runs in a transaction, so not CONCURRENTLY); a large installation may
-- create them CONCURRENTLY by hand before upgrading: the statements here then do nothing.
CREATE INDEX IF NOT EXISTS batches_user_status_list ON batches (user_id, status, created_at DESC, id DESC)
  WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS files_user_purpose_list ON files (user_id, purpose, created_at DESC, id DESC)
  WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS image_jobs_user_status_list ON image_jobs (user_id, status, created_at DESC, id DESC);
