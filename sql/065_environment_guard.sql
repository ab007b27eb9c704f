-- 065: the environment guard (src/ops/guard.c). A job remembers the source and the
-- Dataverse environment it was started against: the source's system identifier, timeline
-- and database (name and oid), and the environment's organization id and URL. A restored or
-- cloned mirror, or a refreshed or copied Dataverse environment, shows up as a different
-- identity; the runner then pauses the job (state_reason 'environment guard: ...') before it
-- reads or writes anything, and keeps the identity it saw here until an operator accepts it
-- with `dwasync job relink` (dwasync.relink_job()).

CREATE TABLE dwasync.job_identity (
    job_id              bigint PRIMARY KEY REFERENCES dwasync.job (id) ON DELETE CASCADE,
    source_system_id    text NOT NULL,   -- pg_control_system().system_identifier
    source_timeline     integer NOT NULL,
    source_database     text NOT NULL,
    source_database_oid bigint NOT NULL,
    organization_id     text NOT NULL,   -- WhoAmI's OrganizationId
    dataverse_url       text NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    -- The identity the runner found instead, when it paused the job (NULL otherwise).
    seen                jsonb,
    seen_at             timestamptz
);

COMMENT ON TABLE dwasync.job_identity IS
    'the source and Dataverse environment each job was started against (environment guard)';

-- Accepts the identity the runner saw as the job's own; resumes the job when the guard
-- paused it. Returns the job's state afterwards. SECURITY DEFINER: the admin role may not
-- write job states or identities directly.
CREATE FUNCTION dwasync.relink_job(p_job text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j record;
    s jsonb;
BEGIN
    SELECT id, state, state_reason INTO j FROM dwasync.job WHERE name = p_job FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job "%" does not exist', p_job USING ERRCODE = 'no_data_found';
    END IF;
    SELECT seen INTO s FROM dwasync.job_identity WHERE job_id = j.id FOR UPDATE;
    IF s IS NULL THEN
        RAISE EXCEPTION 'job "%" has no changed source or environment to accept', p_job
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'The environment guard records a change when the runner starts the job.';
    END IF;
    -- Another source cluster or timeline numbers its WAL anew: the old checkpoint would make
    -- the runner pass over the new history's transactions below it (pipeline.h).
    IF (SELECT source_system_id IS DISTINCT FROM s ->> 'source_system_id'
               OR source_timeline IS DISTINCT FROM (s ->> 'source_timeline')::integer
          FROM dwasync.job_identity WHERE job_id = j.id) THEN
        UPDATE dwasync.checkpoint SET confirmed_lsn = '0/0', updated_at = now()
         WHERE job_id = j.id;
    END IF;
    UPDATE dwasync.job_identity
       SET source_system_id = s ->> 'source_system_id',
           source_timeline = (s ->> 'source_timeline')::integer,
           source_database = s ->> 'source_database',
           source_database_oid = (s ->> 'source_database_oid')::bigint,
           organization_id = s ->> 'organization_id',
           dataverse_url = s ->> 'dataverse_url',
           recorded_at = now(), seen = NULL, seen_at = NULL
     WHERE job_id = j.id;
    IF j.state = 'paused' AND j.state_reason LIKE 'environment guard:%' THEN
        UPDATE dwasync.job SET state = 'active', state_reason = NULL, updated_at = now()
         WHERE id = j.id;
        RETURN 'active';
    END IF;
    RETURN j.state;
END $$;

REVOKE ALL ON FUNCTION dwasync.relink_job(text) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'dwasync_admin') THEN
        GRANT SELECT ON dwasync.job_identity TO dwasync_admin;
        GRANT EXECUTE ON FUNCTION dwasync.relink_job(text) TO dwasync_admin;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'dwasync_runner') THEN
        GRANT SELECT, INSERT, UPDATE ON dwasync.job_identity TO dwasync_runner;
    END IF;
END $$;
