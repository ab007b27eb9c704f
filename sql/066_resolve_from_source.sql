-- 066: triage of bad source data. When a key's queue (an open head and its waiting
-- followers) carries a bad value that was since fixed in the source, replaying or skipping
-- the rows one by one is wrong or slow: dwasync.resolve_from_source() reads the key's row as
-- it is now in the source, turns the key's latest queued row into that one state (an
-- update of the row, or a delete when it is gone) queued for replay, and resolves every
-- earlier row of the key at once. The replay engine then applies the state through the
-- job's current maps like any replay (per-key order holds: the key stays blocked until the
-- state is applied, and changes that arrive meanwhile wait behind it).
--
-- The row is looked up by the table's replica identity index or primary key. It reads the
-- source table in the database the control schema lives in (the default,
-- [control] conninfo empty); with the control schema elsewhere it refuses with a clear error.

CREATE FUNCTION dwasync.resolve_from_source(p_id bigint) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r dwasync.error;
    latest dwasync.error;
    rel regclass;
    cond text;
    cur jsonb;
    n integer;
BEGIN
    SELECT * INTO r FROM dwasync.error WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'error % does not exist', p_id USING ERRCODE = 'no_data_found';
    END IF;
    IF r.status IN ('resolved', 'skipped') THEN
        RAISE NOTICE 'error % is already %: nothing to resolve', p_id, r.status;
        RETURN 0;
    END IF;
    PERFORM 1 FROM dwasync.error e
     WHERE e.job_id = r.job_id AND e.map_id = r.map_id AND md5(e.key_text) = md5(r.key_text)
       AND e.key_text = r.key_text AND e.status IN ('open', 'waiting', 'replaying')
       FOR UPDATE;
    IF EXISTS (SELECT 1 FROM dwasync.key_queue(r.job_id, r.map_id, r.key_text) q
                WHERE q.status = 'replaying') THEN
        RAISE EXCEPTION 'error %: a replay of its key is in flight', p_id
            USING ERRCODE = 'object_in_use',
                  HINT = 'Wait until dwasync errors list shows it open or resolved, then run it again.';
    END IF;
    SELECT * INTO latest FROM dwasync.key_queue(r.job_id, r.map_id, r.key_text) q
     ORDER BY q.commit_lsn DESC, q.position DESC, q.part DESC LIMIT 1;
    IF latest.part <> 0 THEN
        RAISE EXCEPTION 'error %: the key''s latest change is the second half of a key-changing update', latest.id
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Replay or skip the key''s rows one by one.';
    END IF;
    rel := to_regclass(format('%I.%I', r.source_schema, r.source_table));
    IF rel IS NULL THEN
        RAISE EXCEPTION 'source table "%.%" is not in this database', r.source_schema, r.source_table
            USING ERRCODE = 'undefined_table',
                  HINT = 'resolve-from-source reads the source row where the control schema lives; replay or skip the rows instead.';
    END IF;
    -- The row is found by its replica identity index, else its primary key (source_key
    -- holds those columns, or the whole row under REPLICA IDENTITY FULL).
    SELECT string_agg(format('t.%1$I = k.%1$I', a.attname), ' AND ') INTO cond
      FROM (SELECT i.indexrelid, i.indkey FROM pg_index i
             WHERE i.indrelid = rel AND (i.indisreplident OR i.indisprimary)
             ORDER BY i.indisreplident DESC LIMIT 1) i
      JOIN pg_attribute a ON a.attrelid = rel AND a.attnum = ANY (i.indkey);
    IF cond IS NULL THEN
        RAISE EXCEPTION 'source table "%.%" has neither a primary key nor a replica identity index',
                        r.source_schema, r.source_table
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Replay or skip the rows one by one.';
    END IF;
    EXECUTE format('SELECT to_jsonb(t) FROM %s t, jsonb_populate_record(NULL::%s, $1) k WHERE %s',
                   rel, rel, cond)
       INTO cur USING r.source_key;
    UPDATE dwasync.error
       SET status = 'resolved', resolved_at = now(),
           resolved_by = format('%s (superseded by the source row, error %s)', session_user, latest.id)
     WHERE job_id = r.job_id AND map_id = r.map_id AND md5(key_text) = md5(r.key_text)
       AND key_text = r.key_text AND status IN ('open', 'waiting') AND id <> latest.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE dwasync.error
       SET operation = CASE WHEN cur IS NULL THEN 'delete' ELSE 'update' END,
           source_row = CASE WHEN cur IS NULL THEN jsonb_build_object('new', NULL, 'old', r.source_key)
                             ELSE jsonb_build_object('new', cur, 'old', NULL) END,
           status = 'replaying', replay_requested_at = now(),
           replay_requested_by = session_user
     WHERE id = latest.id;
    PERFORM dwasync.notify_replay(r.job_id);
    RETURN n + 1;
END $$;

REVOKE ALL ON FUNCTION dwasync.resolve_from_source(bigint) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'dwasync_triage') THEN
        GRANT EXECUTE ON FUNCTION dwasync.resolve_from_source(bigint) TO dwasync_triage;
    END IF;
END $$;
