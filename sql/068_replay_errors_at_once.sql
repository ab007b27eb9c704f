-- 068: dwasync.replay_errors() queues its keys in one statement. It called replay_error()
-- for every matching row (a locked read, two walks of the key's queue, an update and a
-- NOTIFY each), so `dwasync errors replay --all` on thousands of rows took longer than the
-- replay it asked for (tests/bench/bench_replay.sh). Same contract as in 020: every key
-- with a matching open row and no row being replayed has its head (its earliest open row)
-- queued for replay; returns the number of rows queued, followers included; the runners
-- of the jobs concerned are notified once each. A row queued by a concurrent call is left
-- as it is (replaying twice is replaying once).
CREATE OR REPLACE FUNCTION dwasync.replay_errors(p_job text DEFAULT NULL, p_table text DEFAULT NULL,
                                                 p_code text DEFAULT NULL, p_class text DEFAULT NULL)
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
    WITH keys AS (
        SELECT DISTINCT x.job_id, x.map_id, x.key_text
          FROM dwasync.error x JOIN dwasync.job j ON j.id = x.job_id
         WHERE x.status = 'open'
           AND (p_job IS NULL OR j.name = p_job)
           AND (p_table IS NULL OR p_table IN (x.source_table,
                                               x.source_schema || '.' || x.source_table,
                                               x.map_name))
           AND (p_code IS NULL OR x.dv_code = p_code)
           AND (p_class IS NULL OR x.class = p_class)
    ), heads AS (
        -- Per key: nothing when a row is being replayed, else its earliest open row.
        SELECT k.job_id, k.map_id, k.key_text, h.id
          FROM keys k
          CROSS JOIN LATERAL (
              SELECT q.id, q.status
                FROM dwasync.error q
               WHERE q.job_id = k.job_id AND q.map_id = k.map_id
                 AND md5(q.key_text) = md5(k.key_text) AND q.key_text = k.key_text
                 AND q.status IN ('open', 'replaying')
               ORDER BY (q.status = 'replaying') DESC, q.commit_lsn, q.position, q.part
               LIMIT 1) h
         WHERE h.status = 'open'
    ), queued AS (
        UPDATE dwasync.error e
           SET status = 'replaying', replay_requested_at = now(),
               replay_requested_by = session_user
          FROM heads h
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
