-- 070: dwasync.apply_role_grants() makes every migration's grants.
--
-- The grants made after 045 (060, 061, 065, 066, 069) were made only by their
-- migrations, when the roles existed then. apply_role_grants(), which a superuser runs when
-- `dwasync init` could not create the roles, did not make them: an operator could not
-- replay from source, an admin could not resync, verify or relink. It makes them now, after
-- 045's, and every later migration that grants adds its grants here.
ALTER FUNCTION dwasync.apply_role_grants() RENAME TO apply_role_grants_045;

CREATE FUNCTION dwasync.apply_role_grants() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM dwasync.apply_role_grants_045();
    IF (SELECT count(*) FROM pg_roles
         WHERE rolname IN ('dwasync_triage', 'dwasync_admin', 'dwasync_runner')) < 3 THEN
        RETURN; -- 045's said why
    END IF;
    GRANT INSERT ON dwasync.copy_request TO dwasync_admin;                             -- 060
    GRANT SELECT ON dwasync.verify_run, dwasync.verify_result TO dwasync_triage;       -- 061
    GRANT SELECT, INSERT, UPDATE, DELETE ON dwasync.verify_run, dwasync.verify_result
        TO dwasync_admin;
    GRANT SELECT ON dwasync.job_identity TO dwasync_admin;                             -- 065
    GRANT EXECUTE ON FUNCTION dwasync.relink_job(text) TO dwasync_admin;
    GRANT SELECT, INSERT, UPDATE ON dwasync.job_identity TO dwasync_runner;
    GRANT EXECUTE ON FUNCTION dwasync.resolve_from_source(bigint) TO dwasync_triage;   -- 066
    GRANT EXECUTE ON FUNCTION                                                          -- 069
        dwasync.replay_errors_chunk(text, text, text, text, timestamptz, integer)
        TO dwasync_triage;
END $$;

REVOKE ALL ON FUNCTION dwasync.apply_role_grants() FROM PUBLIC;
SELECT dwasync.apply_role_grants();
