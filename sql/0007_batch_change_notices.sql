-- Every process keeps the answers clients poll most (a batch, a page of batches) in memory until
-- that user's batches change (src/http/read-cache.ts). These triggers say when: after each
-- statement that inserts, updates or deletes batches, one NOTIFY on ibg_batches_changed naming
-- the users whose batches it touched. A NOTIFY is delivered when its transaction commits, and
-- never if it rolls back; repeats within one transaction are delivered once. So a cache drops a
-- user's answers after every committed change of them, and a process that was not listening at
-- the time starts from an empty cache (NotificationListener's reset).
--
-- Per statement, with transition tables (one trigger per event, as in 0006): the sweep's bulk
-- expiry of a thousand batches is one notice, not a thousand. A payload names at most ~7,000
-- bytes of user ids (NOTIFY's limit is 8,000); past that it is '*': drop every user's answers.
-- Whether a column the clients see changed is not checked: the few extra drops (a lease or a
-- Vertex state moving) cost a reload, a missed one would show a stale batch. A change made with
-- the triggers off (session_replication_role = replica, ALTER TABLE … DISABLE TRIGGER) announces
-- nothing: the caches show it once their answers expire (5 s).
CREATE FUNCTION notify_batches_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  users text;
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT string_agg(DISTINCT user_id::text, ',') INTO users FROM new_rows;
  ELSIF TG_OP = 'DELETE' THEN
    SELECT string_agg(DISTINCT user_id::text, ',') INTO users FROM old_rows;
  ELSE
    SELECT string_agg(DISTINCT user_id::text, ',') INTO users
      FROM (SELECT user_id FROM old_rows UNION ALL SELECT user_id FROM new_rows) changed;
  END IF;
  IF users IS NOT NULL THEN
    PERFORM pg_notify('ibg_batches_changed', CASE WHEN length(users) > 7000 THEN '*' ELSE users END);
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER batches_notify_inserted AFTER INSERT ON batches
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION notify_batches_changed();
CREATE TRIGGER batches_notify_updated AFTER UPDATE ON batches
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION notify_batches_changed();
CREATE TRIGGER batches_notify_deleted AFTER DELETE ON batches
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION notify_batches_changed();
