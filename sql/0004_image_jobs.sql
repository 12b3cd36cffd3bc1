-- Single images on Vertex online prediction. Every sync call, async image job and task-API task
-- is one row: what was asked, what it was charged, what it made. Reserve (pre-deduction),
-- consume and refund are each one transaction with their billing_logs row, tied to this id.
CREATE TABLE image_jobs (
  id              text PRIMARY KEY,
  user_id         bigint NOT NULL REFERENCES users(id),
  -- sync: the HTTP request waits for it; async: a pg-boss job runs it (`?async=true`, the task API).
  mode            text NOT NULL CHECK (mode IN ('sync', 'async')),
  -- The facade that made it, for its view: OpenAI's image_job or the task API's WAIT/DONE/FAIL.
  source          text NOT NULL CHECK (source IN ('openai', 'task')),
  operation       text NOT NULL CHECK (operation IN ('generation', 'edit')),
  model           text NOT NULL,
  -- The OpenAI body as checked (reference images are in `inputs`, never inline here).
  request         jsonb NOT NULL,
  -- Reference images and mask as stored objects: [{key, mimeType, role: image|mask}], in order.
  inputs          jsonb NOT NULL DEFAULT '[]',
  n               integer NOT NULL CHECK (n BETWEEN 1 AND 10),
  size_tier       text NOT NULL,
  unit_price      bigint NOT NULL CHECK (unit_price >= 0),
  response_format text NOT NULL CHECK (response_format IN ('b64_json', 'url')),
  status          text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired')),
  -- Images made so far, stored as objects: [{index, key, mimeType, revisedPrompt}]. An async job
  -- records each one as it lands, so a job resumed after a crash makes only the missing ones.
  images          jsonb NOT NULL DEFAULT '[]',
  pre_deducted    bigint NOT NULL CHECK (pre_deducted >= 0),
  settled         bigint,
  refunded        bigint,
  usage           jsonb,
  error_code      text,
  error_message   text,
  -- The task API's `request_id` (its submit answer names the request and the job apart).
  task_request_id text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  started_at      timestamptz,
  completed_at    timestamptz,
  -- An unfinished job past this ends `expired` (the sweep), refunded.
  expires_at      timestamptz NOT NULL,
  -- When the sweep deleted its stored inputs and images (FILE_RETENTION after completion).
  purged_at       timestamptz
);
-- GET /v1/jobs lists newest first with an `after` cursor.
CREATE INDEX image_jobs_user_list ON image_jobs (user_id, created_at DESC, id DESC);
-- The sweep's work: unfinished jobs by expiry, finished ones by retention.
CREATE INDEX image_jobs_open ON image_jobs (expires_at) WHERE status IN ('queued', 'running');
CREATE INDEX image_jobs_retained ON image_jobs (completed_at) WHERE purged_at IS NULL AND completed_at IS NOT NULL;
-- USER_MAX_CONCURRENT_REQUESTS counts a user's running sync calls.
CREATE INDEX image_jobs_user_sync_open ON image_jobs (user_id) WHERE mode = 'sync' AND status IN ('queued', 'running');

ALTER TABLE billing_logs ADD COLUMN image_job_id text REFERENCES image_jobs(id);
-- Exactly once per image job, as per batch: one reservation, at most one refund.
CREATE UNIQUE INDEX billing_logs_image_job_once ON billing_logs (image_job_id, type)
  WHERE type IN ('pre_deduction', 'difference');
