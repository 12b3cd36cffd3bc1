-- The OpenAI-compatible surface: files uploaded for a later batch (purpose `batch`), file expiry
-- (retention), idempotent POSTs, webhook endpoints and their deliveries, and the secret that
-- signs links which skip authentication.

ALTER TABLE files DROP CONSTRAINT files_purpose_check;
ALTER TABLE files ADD CONSTRAINT files_purpose_check
  CHECK (purpose IN ('vision', 'image_batch', 'batch', 'batch_output', 'batch_error'));
-- When the sweep deletes the file's objects (null: kept until deleted). Files made before this
-- migration keep null: their retention was never promised.
ALTER TABLE files ADD COLUMN expires_at timestamptz;
-- Objects that belong to the file and go with it (a url-mode output file's images), as a key prefix.
ALTER TABLE files ADD COLUMN companion_prefix text;
CREATE INDEX files_expiring ON files (expires_at) WHERE deleted_at IS NULL AND expires_at IS NOT NULL;
-- OpenAI lists files newest first with an `after` cursor: (created_at, id) is the keyset.
DROP INDEX files_user;
CREATE INDEX files_user_list ON files (user_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
-- A batch's reads of its input file: DELETE /v1/files/{id} refuses while an unfinished batch reads it.
CREATE INDEX batches_input_file ON batches (input_file_id);

-- OpenAI's `output_expires_after.seconds`: how long the output and error files live (null: FILE_RETENTION).
ALTER TABLE batches ADD COLUMN output_expires_seconds integer
  CHECK (output_expires_seconds BETWEEN 3600 AND 2592000);

-- Idempotency-Key: the first request with a key runs (holding a lease it renews while it runs);
-- its 2xx answer is kept for 24 h and replayed to a repeat. A request that failed releases its
-- key. The answer is written in the transaction of the write it reports, so a crash between the
-- two cannot make a retry create a second batch.
CREATE TABLE idempotency_keys (
  user_id       bigint NOT NULL REFERENCES users(id),
  key           text NOT NULL,
  -- sha256 of the method, the path and the request (JSON body, or form fields and file bytes)
  fingerprint   text,
  status_code   integer,
  response      jsonb,
  locked_until  timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);

CREATE TABLE webhook_endpoints (
  id          text PRIMARY KEY,
  user_id     bigint NOT NULL REFERENCES users(id),
  url         text NOT NULL,
  events      text[] NOT NULL,
  -- `whsec_` + base64 of 32 random bytes: Standard Webhooks signs with the decoded bytes
  secret      text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  deleted_at  timestamptz
);
CREATE INDEX webhook_endpoints_user ON webhook_endpoints (user_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;

-- One event to one endpoint. Written in the transaction that finishes the batch; the body is
-- stored as sent, so every attempt signs and sends the same bytes under the same webhook-id.
CREATE TABLE webhook_deliveries (
  id                text PRIMARY KEY,
  endpoint_id       text NOT NULL REFERENCES webhook_endpoints(id),
  event_id          text NOT NULL,
  event_type        text NOT NULL,
  batch_id          text NOT NULL,
  body              text NOT NULL,
  status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
  attempts          integer NOT NULL DEFAULT 0,
  last_status_code  integer,
  last_error        text,
  next_attempt_at   timestamptz,
  delivered_at      timestamptz,
  created_at        timestamptz NOT NULL DEFAULT now(),
  UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

-- Secrets the service makes itself on first start and every process must share (the key that
-- signs image links, unless URL_SIGNING_SECRET is set).
CREATE TABLE service_secrets (
  name        text PRIMARY KEY,
  value       text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
