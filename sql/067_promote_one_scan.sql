-- 067: promote_next reads a key's queue once. It read it three times (its length, whether
-- it has an open or replaying row, its head), and it runs for every replayed row
-- (replay_succeeded) and every skip: those scans were most of a replay's cost in
-- tests/bench/bench_replay.sh. Same contract as in 020: makes the earliest waiting row of a
-- key its head, queued for replay, when the key has no open or replaying row; returns how
-- many rows the key still has queued. Internal.
CREATE OR REPLACE FUNCTION dwasync.promote_next(p_job bigint, p_map bigint, p_key text, p_by text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
    blocked boolean;
    head_id bigint;
BEGIN
    SELECT count(*), coalesce(bool_or(q.status IN ('open', 'replaying')), false),
           (array_agg(q.id ORDER BY q.commit_lsn, q.position, q.part))[1]
      INTO n, blocked, head_id
      FROM dwasync.error q
     WHERE q.job_id = p_job AND q.map_id = p_map
       AND md5(q.key_text) = md5(p_key) AND q.key_text = p_key
       AND q.status IN ('open', 'waiting', 'replaying');
    IF n = 0 OR blocked THEN
        RETURN n;
    END IF;
    UPDATE dwasync.error
       SET status = 'replaying', replay_requested_at = now(), replay_requested_by = p_by
     WHERE id = head_id;
    RETURN n;
END $$;
