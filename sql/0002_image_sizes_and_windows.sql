-- A vision file's pixel size, read from its header at upload (null for other files).
ALTER TABLE files ADD COLUMN width integer, ADD COLUMN height integer;

-- The completion window a batch was created with, shown as OpenAI shows it ("24h"): taken from
-- the configuration at creation, so a later change of BATCH_COMPLETION_WINDOW does not rewrite
-- what older batches say.
ALTER TABLE batches ADD COLUMN completion_window text NOT NULL DEFAULT '24h';
