-- 069: a replay of many rows starts at once and claims without sorting the whole queue.
--
-- `dwasync errors replay --all` queued every key in one transaction, so the daemon started
-- only after the last of them (a fifth of tests/bench/bench_replay.sh's replay). It now
-- queues them in chunks, parents' first, with dwasync.replay_errors_chunk(): the daemon
-- replays the first chunk while the next is queued. dwasync.replay_errors() is one chunk
-- without a limit, as before.
--
-- The daemon's claim read and sorted every row being replayed, once per claim. The index
-- below gives each table map's queued rows in commit order, so a claim reads only the rows
-- it takes (and those in flight) of each map (src/control/errtable.c).

CREATE INDEX error_replaying_map ON dwasync.error (job_id, map_id, commit_lsn, position, part)
    WHERE status = 'replaying';
DROP INDEX dwasync.error_replaying;

-- Queues the open rows matching the filters (NULL matches all: job name, table as
-- "schema.table", "table" or the map name, Dataverse code, class) that head their key, as
-- replay_errors(): a key with a row being replayed is left as it is. At most
-- p_limit keys (NULL: all), parents' before their children's (a table group's upserts by
-- ascending sequence, its deletes by descending, as the daemon applies them), then in commit
-- order. Rows queued since p_since are left out: a caller that repeats it until it returns
-- 0 stops, even when the daemon fails rows again as fast as they are queued. Returns the
-- number of rows queued, followers included, and notifies the runners of the jobs concerned.
CREATE FUNCTION dwasync.replay_errors_chunk(p_job text, p_table text, p_code text,
                                            p_class text, p_since timestamptz,
                                            p_limit integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
    jobs bigint[];
BEGIN
    IF p_job IS NOT NULL AND NOT EXISTS (SELECT 1 FROM dwasync.job WHERE name = p_job) THEN
        RAISE EXCEPTION 'job "%" does not exist', p_job USING ERRCODE = 'no_data_found';
    END IF;
    -- The matching open rows that head their key (nothing of the key being replayed, no
    -- earlier open row), parents' first: one probe of the key's queue each.
    WITH chosen AS (
        SELECT x.id
          FROM dwasync.error x JOIN dwasync.job j ON j.id = x.job_id
          LEFT JOIN dwasync.table_map m ON m.id = x.map_id
         WHERE x.status = 'open'
           AND (p_job IS NULL OR j.name = p_job)
           AND (p_table IS NULL OR p_table IN (x.source_table,
                                               x.source_schema || '.' || x.source_table,
                                               x.map_name))
           AND (p_code IS NULL OR x.dv_code = p_code)
           AND (p_class IS NULL OR x.class = p_class)
           AND (p_since IS NULL OR x.replay_requested_at IS NULL
                OR x.replay_requested_at < p_since)
           AND NOT EXISTS (
               SELECT 1 FROM dwasync.error q
                WHERE q.job_id = x.job_id AND q.map_id = x.map_id
                  AND md5(q.key_text) = md5(x.key_text) AND q.key_text = x.key_text
                  AND q.status IN ('open', 'replaying') AND q.id <> x.id
                  AND (q.status = 'replaying'
                       OR (q.commit_lsn, q.position, q.part) < (x.commit_lsn, x.position, x.part)))
         ORDER BY coalesce(m.group_id, 0),
                  CASE WHEN x.operation = 'delete' THEN -coalesce(m.sequence, 0)
                       ELSE coalesce(m.sequence, 0) END,
                  x.commit_lsn, x.position, x.part
         LIMIT p_limit
    ), queued AS (
        UPDATE dwasync.error e
           SET status = 'replaying', replay_requested_at = now(),
               replay_requested_by = session_user
          FROM chosen h
         WHERE e.id = h.id AND e.status = 'open'
        RETURNING e.job_id, e.map_id, e.key_text
    )
    -- The statement's snapshot still shows the heads open: each queue counts whole.
    SELECT coalesce(sum(c.n), 0), array_agg(DISTINCT k.job_id)
      INTO n, jobs
      FROM queued k
      CROSS JOIN LATERAL (
          SELECT count(*) AS n
            FROM dwasync.error q
           WHERE q.job_id = k.job_id AND q.map_id = k.map_id
             AND md5(q.key_text) = md5(k.key_text) AND q.key_text = k.key_text
             AND q.status IN ('open', 'waiting', 'replaying')) c;
    PERFORM dwasync.notify_replay(j) FROM unnest(jobs) AS j WHERE j IS NOT NULL;
    RETURN n;
END $$;

-- Same contract as in 020 and 068.
CREATE OR REPLACE FUNCTION dwasync.replay_errors(p_job text DEFAULT NULL, p_table text DEFAULT NULL,
                                                 p_code text DEFAULT NULL, p_class text DEFAULT NULL)
RETURNS integer
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT dwasync.replay_errors_chunk(p_job, p_table, p_code, p_class, NULL, NULL)
$$;

REVOKE ALL ON FUNCTION dwasync.replay_errors_chunk(text, text, text, text, timestamptz, integer)
    FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'dwasync_triage') THEN
        GRANT EXECUTE ON FUNCTION
            dwasync.replay_errors_chunk(text, text, text, text, timestamptz, integer)
            TO dwasync_triage;
    END IF;
END $$;
