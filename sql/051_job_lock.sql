-- 051: the job lock. The active runner of a job holds an EXCLUSIVE lock on the job's own
-- empty table dwasync.job_lock_<id>, in a transaction kept open on a dedicated session
-- (src/ops/ha.c). LOCK TABLE in that mode needs UPDATE on the table, which only its owner
-- and the runner role have: a role with mere CONNECT cannot squat the lock and stall
-- replication (any role can take any advisory lock, which the job lock used to be). A
-- table lock takes no transaction id, so the open transaction neither holds back vacuum
-- nor makes the creation of a logical slot wait for it (a row lock would do both).

-- The job's lock table, created on first use by its owner. For the runner.
CREATE FUNCTION dwasync.job_lock_relation(p_job_id bigint) RETURNS regclass
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel text := format('dwasync.%I', 'job_lock_' || p_job_id);
BEGIN
    IF to_regclass(rel) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE TABLE %s ()', rel);
            EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', rel);
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'dwasync_runner') THEN
                EXECUTE format('GRANT UPDATE ON %s TO dwasync_runner', rel);
            END IF;
        EXCEPTION WHEN duplicate_table OR unique_violation THEN
            NULL; -- two runners started together: the other one created it
        END;
    END IF;
    RETURN rel::regclass;
END $$;

-- Who holds a job's lock (pid, role, application_name; a dwasync runner's lock session is
-- named 'dwasync job lock'). Empty when nobody does. For `status` and `check`.
CREATE FUNCTION dwasync.job_lock_holder(p_job_id bigint)
RETURNS TABLE (pid integer, role name, application_name text, since timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.pid, a.usename, a.application_name, a.xact_start
      FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'relation' AND l.mode = 'ExclusiveLock' AND l.granted
       AND l.relation = to_regclass(format('dwasync.%I', 'job_lock_' || p_job_id))
$$;

-- `dwasync errors replay` asks whether an active runner will act on its request: a session
-- holding the job's lock (was: the advisory lock of 021).
CREATE OR REPLACE FUNCTION dwasync.replay_listeners(p_job text DEFAULT NULL) RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*)::integer FROM dwasync.job j, dwasync.job_lock_holder(j.id)
     WHERE p_job IS NULL OR j.name = p_job
$$;

REVOKE ALL ON FUNCTION dwasync.job_lock_relation(bigint), dwasync.job_lock_holder(bigint)
    FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'dwasync_triage') THEN
        GRANT EXECUTE ON FUNCTION dwasync.job_lock_holder(bigint) TO dwasync_triage;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'dwasync_runner') THEN
        GRANT EXECUTE ON FUNCTION dwasync.job_lock_relation(bigint),
                                  dwasync.job_lock_holder(bigint) TO dwasync_runner;
    END IF;
END $$;
