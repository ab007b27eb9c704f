-- 021: triage from psql: views, the alert rule, retention, the daemon-listener probe and
-- the roles dwasync_triage (read the views, replay and skip) and dwasync_admin (jobs, maps).
--
-- The views run with their owner's rights, so dwasync_triage needs no right on the tables;
-- they call only built-in functions, because a function in a view runs as the caller.

-- Alert rule, as dual-write has: job.options -> 'pause_on_errors' = {"errors": N,
-- "minutes": M} pauses the job when more than N errors failed in the last M minutes.
-- Absent or null: off (the default).
CREATE FUNCTION dwasync.valid_alert_rule(r jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT r IS NULL OR r = 'null'::jsonb
        OR (jsonb_typeof(r) = 'object'
            AND (SELECT count(*) FROM jsonb_object_keys(r)) = 2
            AND jsonb_typeof(r -> 'errors') = 'number'
            AND jsonb_typeof(r -> 'minutes') = 'number'
            AND (r ->> 'errors')::numeric = trunc((r ->> 'errors')::numeric)
            AND (r ->> 'minutes')::numeric = trunc((r ->> 'minutes')::numeric)
            AND (r ->> 'errors')::numeric BETWEEN 0 AND 1000000000
            AND (r ->> 'minutes')::numeric BETWEEN 1 AND 100000)
$$;

ALTER TABLE dwasync.job ADD CONSTRAINT job_pause_on_errors_valid
    CHECK (dwasync.valid_alert_rule(options -> 'pause_on_errors'));

-- Failures (rows that carry an error, not rows merely parked) in the rule's window.
CREATE FUNCTION dwasync.alert_state(p_job bigint, OUT enabled boolean, OUT max_errors integer,
                                    OUT minutes integer, OUT errors_in_window bigint,
                                    OUT tripped boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rule jsonb;
BEGIN
    SELECT j.options -> 'pause_on_errors' INTO rule FROM dwasync.job j WHERE j.id = p_job;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % does not exist', p_job USING ERRCODE = 'no_data_found';
    END IF;
    enabled := rule IS NOT NULL AND rule <> 'null'::jsonb;
    IF NOT enabled THEN
        tripped := false;
        RETURN;
    END IF;
    max_errors := (rule ->> 'errors')::integer;
    minutes := (rule ->> 'minutes')::integer;
    SELECT count(*) INTO errors_in_window FROM dwasync.error e
     WHERE e.job_id = p_job AND e.class IS NOT NULL
       AND e.last_failed_at > now() - make_interval(mins => minutes);
    tripped := errors_in_window > max_errors;
END $$;

-- Pauses an active job whose alert rule tripped; returns the reason it recorded (the
-- daemon logs it), or NULL when nothing was done.
CREATE FUNCTION dwasync.enforce_alert_rule(p_job bigint) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a record;
    reason text;
BEGIN
    SELECT * INTO a FROM dwasync.alert_state(p_job);
    IF NOT a.tripped THEN
        RETURN NULL;
    END IF;
    reason := format('alert rule: %s errors in the last %s minutes (more than %s)',
                     a.errors_in_window, a.minutes, a.max_errors);
    UPDATE dwasync.job SET state = 'paused', state_reason = reason, updated_at = now()
     WHERE id = p_job AND state = 'active';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN reason;
END $$;

-- Retention: deletes resolved and skipped rows finished more than p_days days ago (all
-- jobs, or one). Open, waiting and replaying rows are never purged. Returns the count.
-- SECURITY DEFINER: dwasync_admin may purge finished rows but not delete errors at will.
CREATE FUNCTION dwasync.purge_errors(p_days integer, p_job bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    IF p_days IS NULL OR p_days < 0 THEN
        RAISE EXCEPTION 'retention must be a number of days >= 0, not %', p_days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM dwasync.error e
     WHERE e.status IN ('resolved', 'skipped')
       AND coalesce(e.resolved_at, e.last_failed_at) < now() - make_interval(days => p_days)
       AND (p_job IS NULL OR e.job_id = p_job);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- The active `dwasync run` of a job holds the job lock (advisory, class 1685545331 =
-- 'dwas', object = job id; include/dwasync/ha.h) and LISTENs on dwasync_replay; pg_locks
-- shows the lock to anyone. Returns how many holders there are for a job (by name), or
-- for any job.
CREATE FUNCTION dwasync.replay_listeners(p_job text DEFAULT NULL) RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*)::integer FROM pg_locks l
     WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
               SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.classid = 1685545331 AND l.objsubid = 2
       AND (p_job IS NULL OR l.objid = (SELECT j.id FROM dwasync.job j WHERE j.name = p_job))
$$;

-- Counts by job, table, class, code and status, with the oldest and newest failure.
CREATE VIEW dwasync.error_summary AS
SELECT j.name AS job,
       e.source_schema || '.' || e.source_table AS source_table,
       e.map_name AS table_map,
       e.class,
       e.dv_code,
       e.status,
       count(*) AS errors,
       min(e.first_failed_at) AS oldest,
       max(e.last_failed_at) AS newest
  FROM dwasync.error e
  JOIN dwasync.job j ON j.id = e.job_id
 GROUP BY j.name, e.source_schema, e.source_table, e.map_name, e.class, e.dv_code, e.status;

-- One row per error, readable: JSON pretty-printed, the head a waiting row is parked behind.
CREATE VIEW dwasync.error_detail AS
SELECT e.id,
       j.name AS job,
       e.map_name AS table_map,
       e.map_id,
       e.source_schema || '.' || e.source_table AS source_table,
       e.operation,
       e.status,
       e.class,
       e.http_status,
       e.dv_code,
       e.message,
       e.missing_parent,
       e.attempts,
       e.first_failed_at,
       e.last_failed_at,
       e.commit_lsn,
       e.xid,
       e.commit_time,
       e.position,
       e.part,
       e.key_text AS source_key,
       e.target_id,
       (SELECT h.id FROM dwasync.error h
         WHERE e.status = 'waiting' AND h.job_id = e.job_id AND h.map_id = e.map_id
           AND md5(h.key_text) = md5(e.key_text) AND h.key_text = e.key_text
           AND h.status IN ('open', 'replaying')
         ORDER BY h.commit_lsn, h.position LIMIT 1) AS blocked_by,
       jsonb_pretty(e.source_row) AS source_row,
       jsonb_pretty(e.payload) AS payload,
       e.replay_requested_at,
       e.replay_requested_by,
       e.resolved_by,
       e.resolved_at,
       e.skip_reason
  FROM dwasync.error e
  JOIN dwasync.job j ON j.id = e.job_id;

-- One row per job: state, slot lag, throughput, errors and the alert rule.
-- lag_seconds is the age of the last applied commit while the slot is behind the current
-- WAL position (0 when it is not): how far behind the source the target is.
CREATE VIEW dwasync.job_status AS
SELECT j.id AS job_id,
       j.name AS job,
       j.state,
       j.state_reason,
       j.slot_name,
       s.active AS slot_active,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint AS lag_bytes,
       CASE WHEN s.confirmed_flush_lsn IS NULL THEN NULL
            WHEN pg_current_wal_lsn() <= s.confirmed_flush_lsn THEN 0::numeric
            ELSE round(greatest(0, extract(epoch FROM now() - c.last_commit_time)), 3)
       END AS lag_seconds,
       c.confirmed_lsn,
       c.last_commit_time,
       c.last_applied_at,
       coalesce(st.last_minute, 0) AS rows_applied_last_minute,
       coalesce(st.last_hour, 0) AS rows_applied_last_hour,
       coalesce(er.open, 0) AS open_errors,
       coalesce(er.waiting, 0) AS waiting_errors,
       coalesce(er.replaying, 0) AS replaying_errors,
       CASE WHEN NOT dwasync.valid_alert_rule(j.options -> 'pause_on_errors')
                 OR j.options -> 'pause_on_errors' IS NULL
                 OR j.options -> 'pause_on_errors' = 'null'::jsonb THEN 'off'
            ELSE format('pause if more than %s errors in %s minutes',
                        j.options -> 'pause_on_errors' ->> 'errors',
                        j.options -> 'pause_on_errors' ->> 'minutes')
       END AS alert_rule,
       al.errors_in_window AS alert_errors_in_window,
       coalesce(al.errors_in_window > (j.options -> 'pause_on_errors' ->> 'errors')::bigint,
                false) AS alert_tripped
  FROM dwasync.job j
  LEFT JOIN pg_replication_slots s ON s.slot_name = j.slot_name
  LEFT JOIN dwasync.checkpoint c ON c.job_id = j.id
  LEFT JOIN LATERAL (
        SELECT sum(a.rows_applied) FILTER (WHERE a.minute > now() - interval '1 minute') AS last_minute,
               sum(a.rows_applied) AS last_hour
          FROM dwasync.apply_stat a
         WHERE a.job_id = j.id AND a.minute > now() - interval '1 hour') st ON true
  LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE e.status = 'open') AS open,
               count(*) FILTER (WHERE e.status = 'waiting') AS waiting,
               count(*) FILTER (WHERE e.status = 'replaying') AS replaying
          FROM dwasync.error e
         WHERE e.job_id = j.id AND e.status IN ('open', 'waiting', 'replaying')) er ON true
  LEFT JOIN LATERAL (
        SELECT count(*) AS errors_in_window
          FROM dwasync.error e
         WHERE jsonb_typeof(j.options -> 'pause_on_errors') = 'object'
           AND e.job_id = j.id AND e.class IS NOT NULL
           AND e.last_failed_at > now() - make_interval(
                   mins => (j.options -> 'pause_on_errors' ->> 'minutes')::integer)) al
       ON jsonb_typeof(j.options -> 'pause_on_errors') = 'object';

-- Nothing in the schema is callable by everyone; the roles below get what they need.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA dwasync FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA dwasync FROM PUBLIC;
REVOKE ALL ON SCHEMA dwasync FROM PUBLIC;
-- (A per-schema ALTER DEFAULT PRIVILEGES cannot take EXECUTE away from PUBLIC: later
-- migrations revoke it on the functions they add, as this one does below.)

-- Creates the two roles when allowed (they are cluster-wide) and grants them their rights.
-- Run again by a superuser if the installing role could not create roles.
CREATE FUNCTION dwasync.apply_role_grants() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    may_create boolean;
BEGIN
    SELECT rolsuper OR rolcreaterole INTO may_create FROM pg_roles WHERE rolname = current_user;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dwasync_triage') AND may_create THEN
        CREATE ROLE dwasync_triage NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dwasync_admin') AND may_create THEN
        CREATE ROLE dwasync_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dwasync_triage')
       OR NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dwasync_admin') THEN
        RAISE NOTICE 'roles dwasync_triage and dwasync_admin are not set up: % may not create roles',
                     current_user
            USING HINT = 'As a superuser, run REVOKE ALL ON FUNCTION dwasync.apply_role_grants() FROM PUBLIC;
SELECT dwasync.apply_role_grants(); in this database.';
        RETURN;
    END IF;

    GRANT USAGE ON SCHEMA dwasync TO dwasync_triage, dwasync_admin;
    GRANT SELECT ON dwasync.error_summary, dwasync.error_detail, dwasync.job_status
        TO dwasync_triage;
    GRANT EXECUTE ON FUNCTION dwasync.replay_error(bigint),
                              dwasync.replay_errors(text, text, text, text),
                              dwasync.skip_error(bigint, text),
                              dwasync.replay_listeners(text),
                              dwasync.valid_alert_rule(jsonb)
        TO dwasync_triage;

    IF NOT pg_has_role('dwasync_admin', 'dwasync_triage', 'MEMBER') THEN
        GRANT dwasync_triage TO dwasync_admin;
    END IF;
    GRANT SELECT, INSERT, UPDATE, DELETE ON dwasync.job, dwasync.table_group, dwasync.table_map
        TO dwasync_admin;
    GRANT SELECT ON dwasync.checkpoint, dwasync.apply_stat, dwasync.error,
                    dwasync.schema_version
        TO dwasync_admin;
    GRANT EXECUTE ON FUNCTION dwasync.purge_errors(integer, bigint),
                              dwasync.alert_state(bigint)
        TO dwasync_admin;
END $$;

REVOKE ALL ON FUNCTION dwasync.apply_role_grants() FROM PUBLIC;
SELECT dwasync.apply_role_grants();
