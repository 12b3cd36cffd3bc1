-- Accounts, keys, models and prices, files, batches and their shards, and the billing log.
-- Money is integer quota units (bigint). Every quota change writes a billing_logs row in the
-- same transaction: for every user, quota change = Σ quota_delta.

CREATE TABLE users (
  id                  bigserial PRIMARY KEY,
  name                text NOT NULL,
  quota               bigint NOT NULL DEFAULT 0 CHECK (quota >= 0),
  used_quota          bigint NOT NULL DEFAULT 0,
  privacy_accepted_at timestamptz,
  created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
  id          bigserial PRIMARY KEY,
  user_id     bigint NOT NULL REFERENCES users(id),
  key_hash    text NOT NULL UNIQUE,          -- sha256 of the key; the key itself is never stored
  key_hint    text NOT NULL,                 -- `sk-…abcd`, to recognise a key in listings
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE models (
  id                    text PRIMARY KEY,
  publisher_model       text NOT NULL,
  aspect_ratios         text[] NOT NULL,
  image_sizes           text[] NOT NULL,
  default_image_size    text NOT NULL DEFAULT '1K',
  max_prompt_chars      integer NOT NULL DEFAULT 32000,
  max_reference_images  integer NOT NULL DEFAULT 3,
  -- sync price of one image per size tier, before the model multiplier (seed 004: 5,000 / 12,500)
  base_prices           jsonb NOT NULL DEFAULT '{"1K": 5000, "2K": 5000, "4K": 12500}',
  price_multiplier      numeric(10, 4) NOT NULL DEFAULT 1 CHECK (price_multiplier > 0),
  batch_ratio           numeric(5, 4) NOT NULL DEFAULT 0.5 CHECK (batch_ratio > 0 AND batch_ratio <= 1),
  enabled               boolean NOT NULL DEFAULT true,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now()
);

INSERT INTO models (id, publisher_model, aspect_ratios, image_sizes, default_image_size, max_prompt_chars, max_reference_images, price_multiplier) VALUES
  ('gemini-2.5-flash-image', 'publishers/google/models/gemini-2.5-flash-image',
   ARRAY['1:1','2:3','3:2','3:4','4:3','4:5','5:4','9:16','16:9','21:9'], ARRAY['1K'], '1K', 32000, 3, 1),
  ('gemini-3-pro-image-preview', 'publishers/google/models/gemini-3-pro-image-preview',
   ARRAY['1:1','2:3','3:2','3:4','4:3','4:5','5:4','9:16','16:9','21:9'], ARRAY['1K','2K','4K'], '1K', 32000, 14, 2);

CREATE TABLE files (
  id          text PRIMARY KEY,
  user_id     bigint NOT NULL REFERENCES users(id),
  purpose     text NOT NULL CHECK (purpose IN ('vision', 'image_batch', 'batch_output', 'batch_error')),
  filename    text NOT NULL,
  bytes       bigint NOT NULL,
  mime_type   text NOT NULL,
  object_key  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  deleted_at  timestamptz
);
CREATE INDEX files_user ON files (user_id, created_at DESC);

CREATE TABLE batches (
  id                 text PRIMARY KEY,
  user_id            bigint NOT NULL REFERENCES users(id),
  status             text NOT NULL CHECK (status IN ('validating', 'failed', 'in_progress', 'finalizing',
                                                     'completed', 'expired', 'cancelling', 'cancelled')),
  -- what `finalizing` ends as: completed, cancelled or expired (a batch stitches and settles either way)
  outcome            text CHECK (outcome IN ('completed', 'failed', 'cancelled', 'expired')),
  endpoint           text NOT NULL DEFAULT '/v1/images/generations',
  input_file_id      text NOT NULL REFERENCES files(id),
  output_file_id     text REFERENCES files(id),
  error_file_id      text REFERENCES files(id),
  model              text,
  errors             jsonb,
  metadata           jsonb,
  request_total      integer NOT NULL DEFAULT 0,
  request_completed  integer NOT NULL DEFAULT 0,
  request_failed     integer NOT NULL DEFAULT 0,
  image_total        integer NOT NULL DEFAULT 0,
  image_succeeded    integer NOT NULL DEFAULT 0,
  -- the model as it was when the batch was charged (prices, ratio, sizes, Vertex model): staging,
  -- submission and settlement use this copy, so an admin edit mid-batch cannot change them
  model_snapshot     jsonb,
  pre_deducted       bigint NOT NULL DEFAULT 0,
  settled            bigint,
  refunded           bigint,
  created_at         timestamptz NOT NULL DEFAULT now(),
  in_progress_at     timestamptz,
  finalizing_at      timestamptz,
  completed_at       timestamptz,
  failed_at          timestamptz,
  expired_at         timestamptz,
  cancelling_at      timestamptz,
  cancelled_at       timestamptz,
  expires_at         timestamptz NOT NULL,
  deleted_at         timestamptz,
  -- a settled batch satisfies pre_deducted - refunded = settled
  CHECK (settled IS NULL OR pre_deducted - refunded = settled)
);
CREATE INDEX batches_user_list ON batches (user_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX batches_open ON batches (status) WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling');

CREATE TABLE shards (
  id               text PRIMARY KEY,
  batch_id         text NOT NULL REFERENCES batches(id),
  seq              integer NOT NULL,
  model            text NOT NULL,
  first_line       integer NOT NULL,        -- 0-based index of the batch's first request in this shard
  request_count    integer NOT NULL,
  image_count      integer NOT NULL,
  input_uri        text NOT NULL,
  output_prefix    text NOT NULL,
  status           text NOT NULL DEFAULT 'staged' CHECK (status IN ('staged', 'submitted', 'done')),
  vertex_job       text,
  vertex_state     text,
  output_dir       text,
  images_succeeded integer NOT NULL DEFAULT 0,
  images_failed    integer NOT NULL DEFAULT 0,
  error            jsonb,
  polls            integer NOT NULL DEFAULT 0,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (batch_id, seq)
);

CREATE TABLE billing_logs (
  id           bigserial PRIMARY KEY,
  user_id      bigint NOT NULL REFERENCES users(id),
  batch_id     text REFERENCES batches(id),
  model        text,
  type         text NOT NULL CHECK (type IN ('topup', 'pre_deduction', 'difference', 'adjustment')),
  quota_delta  bigint NOT NULL,
  content      text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_logs_user ON billing_logs (user_id, id);
-- the ledger's exactly-once guarantees: one pre-deduction and at most one difference per batch
CREATE UNIQUE INDEX billing_logs_once ON billing_logs (batch_id, type) WHERE type IN ('pre_deduction', 'difference');
