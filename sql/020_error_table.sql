-- 020: the error table and the per-key queues built on it (DESIGN.md invariants 1-3).
--
-- One row per change (through one table map) that could not be applied. Rows of one key
-- (job, table map, canonical source key text) form a queue in commit order: the head is
-- `open` (failed, waiting for the operator) or `replaying` (queued for the daemon), every
-- later row of the key is `waiting` behind it, never sent while the head is unresolved.
-- Rows leave the queue as `resolved` (applied by a replay) or `skipped` (by an operator).
-- A key is blocked exactly while it has a row in open, waiting or replaying: that is the
-- set the pipeline reloads after a restart.

CREATE TABLE dwasync.error (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id              bigint NOT NULL REFERENCES dwasync.job (id) ON DELETE CASCADE,
    -- No foreign key: an error row is evidence and outlives a map re-import that replaces
    -- the map row; map_name names it for people and for re-resolving the map on replay.
    map_id              bigint NOT NULL,
    map_name            text NOT NULL DEFAULT '',
    source_schema       text NOT NULL,
    source_table        text NOT NULL,
    operation           text NOT NULL
                        CHECK (operation IN ('insert', 'update', 'delete', 'truncate')),
    source_key          jsonb NOT NULL,
    key_text            text NOT NULL,        -- the queue's identity: the target row (target_id)
    target_id           text,                 -- "<entity set>(<key>)" when the row was mapped
    source_row          jsonb NOT NULL,       -- {"new": {...} | null, "old": {...} | null}
    payload             jsonb,                -- the body last sent, if a request was made
    commit_lsn          pg_lsn NOT NULL,
    xid                 bigint,
    commit_time         timestamptz,
    position            integer NOT NULL CHECK (position >= 0), -- change index in its transaction
    -- 0, or 1 for the second write one change yields through one map (a key-changing
    -- update is a delete of the old row, part 0, and an upsert of the new one, part 1).
    part                smallint NOT NULL DEFAULT 0 CHECK (part >= 0),
    http_status         integer,
    dv_code             text,
    message             text NOT NULL DEFAULT '',
    missing_parent      text,                 -- "<set>(<key>)" of a missing parent
    class               text CHECK (class IN ('mapping', 'validation', 'missing_parent',
                                              'duplicate', 'privilege', 'conflict',
                                              'transient', 'unknown')),
    attempts            integer NOT NULL DEFAULT 1 CHECK (attempts >= 0),
    first_failed_at     timestamptz NOT NULL DEFAULT now(),
    last_failed_at      timestamptz NOT NULL DEFAULT now(),
    status              text NOT NULL DEFAULT 'open'
                        CHECK (status IN ('open', 'waiting', 'replaying', 'resolved', 'skipped')),
    replay_requested_at timestamptz,
    replay_requested_by text,
    resolved_by         text,
    resolved_at         timestamptz,
    skip_reason         text,
    -- A stream replayed after a crash hands the same change again: it must not add a row.
    CONSTRAINT error_change_unique UNIQUE (job_id, commit_lsn, position, part),
    CONSTRAINT error_skip_has_reason CHECK (status <> 'skipped' OR skip_reason IS NOT NULL)
);

COMMENT ON TABLE dwasync.error IS
    'dwasync: changes that could not be applied, one per change and map; see dwasync.error_detail';

-- Per-key queues: the blocked set and every queue walk read this (md5: keys may be long).
CREATE INDEX error_key_queue ON dwasync.error (job_id, map_id, md5(key_text), commit_lsn)
    WHERE status IN ('open', 'waiting', 'replaying');
-- Heads queued for the daemon.
CREATE INDEX error_replaying ON dwasync.error (job_id, commit_lsn, position)
    WHERE status = 'replaying';
-- Triage filters and the alert window.
CREATE INDEX error_job_status ON dwasync.error (job_id, status, source_table);
CREATE INDEX error_job_failed_at ON dwasync.error (job_id, last_failed_at);
-- Retention.
CREATE INDEX error_finished ON dwasync.error (coalesce(resolved_at, last_failed_at))
    WHERE status IN ('resolved', 'skipped');

-- The unresolved rows of one key, earliest first. Internal.
CREATE FUNCTION dwasync.key_queue(p_job bigint, p_map bigint, p_key text)
RETURNS SETOF dwasync.error
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM dwasync.error e
     WHERE e.job_id = p_job AND e.map_id = p_map
       AND md5(e.key_text) = md5(p_key) AND e.key_text = p_key
       AND e.status IN ('open', 'waiting', 'replaying')
     ORDER BY e.commit_lsn, e.position, e.part
$$;

-- Makes the earliest waiting row of a key its head, queued for replay, when the key has
-- no open or replaying row; returns how many rows the key still has queued. Internal.
CREATE FUNCTION dwasync.promote_next(p_job bigint, p_map bigint, p_key text, p_by text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    head_id bigint;
    n integer;
BEGIN
    SELECT count(*) INTO n FROM dwasync.key_queue(p_job, p_map, p_key);
    IF n = 0 OR EXISTS (SELECT 1 FROM dwasync.key_queue(p_job, p_map, p_key) q
                         WHERE q.status IN ('open', 'replaying')) THEN
        RETURN n;
    END IF;
    SELECT q.id INTO head_id FROM dwasync.key_queue(p_job, p_map, p_key) q LIMIT 1;
    UPDATE dwasync.error
       SET status = 'replaying', replay_requested_at = now(), replay_requested_by = p_by
     WHERE id = head_id;
    RETURN n;
END $$;

CREATE FUNCTION dwasync.notify_replay(p_job bigint) RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_notify('dwasync_replay', j.name) FROM dwasync.job j WHERE j.id = p_job
$$;

-- Inserts a batch of error rows (a JSON array, one object per row; see errtable.c for the
-- fields) in one statement. Rows already present (same job, commit LSN, position, part)
-- are left alone. The status is decided here, against the table, so that a restarted
-- pipeline and the database cannot disagree: a row whose key already has an unresolved
-- row, or an earlier row in the batch, waits; otherwise it is the head, `open`, or
-- `replaying` if the pipeline parked it without sending it (its blocker is gone).
-- Returns the rows inserted. Internal: for the daemon's role.
CREATE FUNCTION dwasync.insert_errors(p_rows jsonb)
RETURNS TABLE (error_id bigint, error_status text, error_map_id bigint, error_key_text text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    jobs bigint[];
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT r.*, row_number() OVER (PARTITION BY r.job_id, r.map_id, r.key_text
                                       ORDER BY r.commit_lsn::pg_lsn, r.position, r.part) AS rn
          FROM jsonb_to_recordset(p_rows) AS r(
               job_id bigint, map_id bigint, map_name text, source_schema text,
               source_table text, operation text, source_key jsonb, key_text text,
               target_id text, source_row jsonb, payload jsonb, commit_lsn text, xid bigint,
               commit_time timestamptz, position integer, part smallint, http_status integer,
               dv_code text, message text, missing_parent text, class text, waiting boolean)
    ), decided AS (
        SELECT i.*,
               i.rn > 1 OR EXISTS (
                   SELECT 1 FROM dwasync.error e
                    WHERE e.job_id = i.job_id AND e.map_id = i.map_id
                      AND md5(e.key_text) = md5(i.key_text) AND e.key_text = i.key_text
                      AND e.status IN ('open', 'waiting', 'replaying')) AS blocked
          FROM input i
    ), ins AS (
        INSERT INTO dwasync.error AS e
               (job_id, map_id, map_name, source_schema, source_table, operation, source_key,
                key_text, target_id, source_row, payload, commit_lsn, xid, commit_time,
                position, part, http_status, dv_code, message, missing_parent, class,
                attempts, status, replay_requested_at, replay_requested_by)
        SELECT d.job_id, d.map_id, coalesce(d.map_name, ''), d.source_schema, d.source_table,
               d.operation, d.source_key, d.key_text, d.target_id,
               coalesce(d.source_row, '{"new": null, "old": null}'), d.payload,
               d.commit_lsn::pg_lsn, d.xid, d.commit_time, d.position, coalesce(d.part, 0),
               d.http_status, nullif(d.dv_code, ''), coalesce(d.message, ''),
               d.missing_parent, d.class,
               CASE WHEN d.class IS NULL THEN 0 ELSE 1 END,
               CASE WHEN d.blocked THEN 'waiting'
                    WHEN coalesce(d.waiting, false) THEN 'replaying'
                    ELSE 'open' END,
               CASE WHEN NOT d.blocked AND coalesce(d.waiting, false) THEN now() END,
               CASE WHEN NOT d.blocked AND coalesce(d.waiting, false) THEN 'dwasync' END
          FROM decided d
         ORDER BY d.commit_lsn::pg_lsn, d.position, d.part
        ON CONFLICT ON CONSTRAINT error_change_unique DO NOTHING
        RETURNING e.id, e.status, e.map_id, e.key_text, e.job_id
    )
    SELECT ins.id, ins.status, ins.map_id, ins.key_text FROM ins;

    -- Tell the replayer about rows that became heads without a blocker.
    SELECT array_agg(DISTINCT e.job_id) INTO jobs
      FROM dwasync.error e
     WHERE e.status = 'replaying' AND e.replay_requested_by = 'dwasync'
       AND e.replay_requested_at = now();
    IF jobs IS NOT NULL THEN
        PERFORM dwasync.notify_replay(j) FROM unnest(jobs) AS j;
    END IF;
END $$;

-- Queues the key of one error row for replay: its head becomes `replaying` and the daemon
-- applies it, then its waiting followers in commit order. Returns how many rows were
-- queued (0 when the row is resolved or skipped, or its key is already queued: replaying
-- twice is replaying once). For operators (dwasync_triage) and `dwasync errors replay`.
CREATE FUNCTION dwasync.replay_error(p_id bigint) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r dwasync.error;
    head dwasync.error;
    n integer;
BEGIN
    SELECT * INTO r FROM dwasync.error WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'error % does not exist', p_id USING ERRCODE = 'no_data_found';
    END IF;
    IF r.status IN ('resolved', 'skipped') THEN
        RAISE NOTICE 'error % is already %: nothing to replay', p_id, r.status;
        RETURN 0;
    END IF;
    -- The key's head: its open or replaying row, else (never normally) its earliest row.
    SELECT * INTO head FROM dwasync.key_queue(r.job_id, r.map_id, r.key_text) q
     ORDER BY (q.status = 'waiting'), q.commit_lsn, q.position, q.part LIMIT 1;
    IF head.status = 'replaying' THEN
        RETURN 0;
    END IF;
    -- A concurrent call may have queued the key meanwhile: then this one queued nothing.
    UPDATE dwasync.error
       SET status = 'replaying', replay_requested_at = now(), replay_requested_by = session_user
     WHERE id = head.id AND status <> 'replaying';
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    SELECT count(*) INTO n FROM dwasync.key_queue(r.job_id, r.map_id, r.key_text);
    PERFORM dwasync.notify_replay(r.job_id);
    RETURN n;
END $$;

-- Queues every open error matching the filters (NULL matches all): job name, table
-- ("schema.table", "table" or the map name), Dataverse code, class. Returns the number
-- of rows queued, followers included.
CREATE FUNCTION dwasync.replay_errors(p_job text DEFAULT NULL, p_table text DEFAULT NULL,
                                      p_code text DEFAULT NULL, p_class text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e record;
    n integer := 0;
BEGIN
    IF p_job IS NOT NULL AND NOT EXISTS (SELECT 1 FROM dwasync.job WHERE name = p_job) THEN
        RAISE EXCEPTION 'job "%" does not exist', p_job USING ERRCODE = 'no_data_found';
    END IF;
    FOR e IN
        SELECT x.id FROM dwasync.error x JOIN dwasync.job j ON j.id = x.job_id
         WHERE x.status = 'open'
           AND (p_job IS NULL OR j.name = p_job)
           AND (p_table IS NULL OR p_table IN (x.source_table,
                                               x.source_schema || '.' || x.source_table,
                                               x.map_name))
           AND (p_code IS NULL OR x.dv_code = p_code)
           AND (p_class IS NULL OR x.class = p_class)
         ORDER BY x.commit_lsn, x.position, x.part
    LOOP
        n := n + dwasync.replay_error(e.id);
    END LOOP;
    RETURN n;
END $$;

-- Skips one error row with a reason. Skipping the head of a key releases its followers:
-- the next waiting row becomes the head, queued for replay. Returns how many rows were
-- released that way (0 for a waiting row, which just leaves its queue).
CREATE FUNCTION dwasync.skip_error(p_id bigint, p_reason text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r dwasync.error;
    n integer;
BEGIN
    IF p_reason IS NULL OR btrim(p_reason) = '' THEN
        RAISE EXCEPTION 'a reason is required to skip an error' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM dwasync.error WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'error % does not exist', p_id USING ERRCODE = 'no_data_found';
    END IF;
    IF r.status IN ('resolved', 'skipped') THEN
        RAISE NOTICE 'error % is already %: nothing to skip', p_id, r.status;
        RETURN 0;
    END IF;
    UPDATE dwasync.error
       SET status = 'skipped', skip_reason = p_reason, resolved_by = session_user,
           resolved_at = now()
     WHERE id = p_id;
    IF r.status = 'waiting' THEN
        RETURN 0;
    END IF;
    n := dwasync.promote_next(r.job_id, r.map_id, r.key_text, session_user);
    IF n > 0 THEN
        PERFORM dwasync.notify_replay(r.job_id);
    END IF;
    RETURN n;
END $$;

-- The replayer's bookkeeping (internal, for the daemon's role). A replayed head that was
-- applied is resolved and its next waiting row becomes the head; returns how many rows the
-- key still has queued (0: the key is unblocked).
CREATE FUNCTION dwasync.replay_succeeded(p_id bigint) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r dwasync.error;
BEGIN
    UPDATE dwasync.error
       SET status = 'resolved', resolved_at = now(),
           resolved_by = coalesce(replay_requested_by, 'dwasync')
     WHERE id = p_id AND status = 'replaying'
    RETURNING * INTO r;
    IF NOT FOUND THEN
        -- Skipped (or deleted) while in flight: the key's state is whatever that left.
        SELECT * INTO r FROM dwasync.error WHERE id = p_id;
        IF NOT FOUND THEN
            RETURN 0;
        END IF;
    END IF;
    RETURN dwasync.promote_next(r.job_id, r.map_id, r.key_text, r.replay_requested_by);
END $$;

-- A replayed head failed again: back to `open` with the new error; its followers wait.
CREATE FUNCTION dwasync.replay_failed(p_id bigint, p_class text, p_http_status integer,
                                      p_code text, p_message text, p_payload jsonb,
                                      p_missing_parent text, p_target_id text)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp AS $$
    UPDATE dwasync.error
       SET status = 'open', class = p_class, http_status = p_http_status,
           dv_code = nullif(p_code, ''), message = coalesce(p_message, ''),
           payload = coalesce(p_payload, payload), missing_parent = p_missing_parent,
           target_id = coalesce(p_target_id, target_id),
           attempts = attempts + 1, last_failed_at = now()
     WHERE id = p_id AND status = 'replaying'
    RETURNING true
$$;

-- Keys whose queue has no head (possible only when a crash interleaved a stream replay
-- with a replay): their earliest waiting row becomes the head, queued. Returns how many.
CREATE FUNCTION dwasync.promote_orphans(p_job bigint) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k record;
    n integer := 0;
BEGIN
    FOR k IN
        SELECT DISTINCT w.map_id, w.key_text FROM dwasync.error w
         WHERE w.job_id = p_job AND w.status = 'waiting'
           AND NOT EXISTS (SELECT 1 FROM dwasync.error h
                            WHERE h.job_id = w.job_id AND h.map_id = w.map_id
                              AND md5(h.key_text) = md5(w.key_text) AND h.key_text = w.key_text
                              AND h.status IN ('open', 'replaying'))
    LOOP
        PERFORM dwasync.promote_next(p_job, k.map_id, k.key_text, 'dwasync');
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
