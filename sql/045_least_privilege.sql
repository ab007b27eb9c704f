-- 045: least privilege. A job's replication slot and publication are named after the job
-- and no role can point them elsewhere; a job changes state only through
-- dwasync.set_job_state() (what the CLI calls) or the daemon; the daemon may run as a member
-- of dwasync_runner instead of the schema owner.

-- Slot and publication names follow the job's name, whatever an INSERT or UPDATE says: a
-- role that may edit a job must not make `job drop` drop, or the daemon stream from, a slot
-- that belongs to someone else. A job is not renamed: its slot would be left behind.
CREATE FUNCTION dwasync.job_derive_names() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.name IS DISTINCT FROM OLD.name THEN
        RAISE EXCEPTION 'job "%" cannot be renamed: its replication slot and publication are named after it',
                        OLD.name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Drop the job and import its maps under the new name.';
    END IF;
    NEW.slot_name := 'dwasync_' || NEW.name;
    NEW.publication_name := 'dwasync_' || NEW.name;
    RETURN NEW;
END $$;

CREATE TRIGGER job_names_derived
    BEFORE INSERT OR UPDATE ON dwasync.job
    FOR EACH ROW EXECUTE FUNCTION dwasync.job_derive_names();

-- Rows written before this migration get their derived names back (the trigger sets them).
DO $$
DECLARE
    j record;
BEGIN
    FOR j IN SELECT name, slot_name, publication_name FROM dwasync.job
              WHERE slot_name <> 'dwasync_' || name OR publication_name <> 'dwasync_' || name LOOP
        RAISE WARNING 'job "%" named slot "%" and publication "%": reset to "dwasync_%"',
                      j.name, j.slot_name, j.publication_name, j.name;
    END LOOP;
    UPDATE dwasync.job SET slot_name = slot_name
     WHERE slot_name <> 'dwasync_' || name OR publication_name <> 'dwasync_' || name;
END $$;

-- The one way a job changes state outside the daemon: start, stop, pause or resume, each
-- from the states it is allowed from. Returns the state before the change, or NULL when the
-- job is not in a state the verb applies to (nothing changed). SECURITY DEFINER: the admin
-- role has no UPDATE right on the state columns.
CREATE FUNCTION dwasync.set_job_state(p_job text, p_verb text, p_initial_sync boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j record;
    from_states text[];
    to_state text;
BEGIN
    CASE p_verb
        WHEN 'start' THEN from_states := '{stopped,failed}'; to_state := 'active';
        WHEN 'stop' THEN from_states := '{active,paused,starting,failed}'; to_state := 'stopped';
        WHEN 'pause' THEN from_states := '{active}'; to_state := 'paused';
        WHEN 'resume' THEN from_states := '{paused}'; to_state := 'active';
        ELSE RAISE EXCEPTION 'unknown job state change "%" (start, stop, pause, resume)', p_verb
                 USING ERRCODE = 'invalid_parameter_value';
    END CASE;
    SELECT id, state INTO j FROM dwasync.job WHERE name = p_job FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job "%" does not exist', p_job USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT j.state = ANY (from_states) THEN
        RETURN NULL;
    END IF;
    UPDATE dwasync.job
       SET state = to_state, state_reason = NULL, updated_at = now(),
           started_at = CASE WHEN p_verb = 'start' THEN now() ELSE started_at END,
           stopped_at = CASE WHEN p_verb = 'stop' THEN now() ELSE stopped_at END,
           initial_sync = CASE WHEN p_verb = 'start' AND p_initial_sync THEN 'pending'
                               ELSE initial_sync END
     WHERE id = j.id;
    RETURN j.state;
END $$;

REVOKE ALL ON FUNCTION dwasync.job_derive_names(), dwasync.set_job_state(text, text, boolean)
    FROM PUBLIC;

-- The roles and their rights, now three: dwasync_triage (read the views, replay and skip),
-- dwasync_admin (jobs and maps; job state only through set_job_state) and dwasync_runner
-- (what `dwasync run` needs in the control schema; its login role also needs REPLICATION
-- and SELECT on the mapped source tables, which are the DBA's to grant).
CREATE OR REPLACE FUNCTION dwasync.apply_role_grants() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    may_create boolean;
    r text;
BEGIN
    SELECT rolsuper OR rolcreaterole INTO may_create FROM pg_roles WHERE rolname = current_user;
    FOREACH r IN ARRAY ARRAY['dwasync_triage', 'dwasync_admin', 'dwasync_runner'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) AND may_create THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            RAISE NOTICE 'roles dwasync_triage, dwasync_admin and dwasync_runner are not set up: % may not create roles',
                         current_user
                USING HINT = 'As a superuser, run REVOKE ALL ON FUNCTION dwasync.apply_role_grants() FROM PUBLIC;
SELECT dwasync.apply_role_grants(); in this database.';
            RETURN;
        END IF;
    END LOOP;

    GRANT USAGE ON SCHEMA dwasync TO dwasync_triage, dwasync_admin, dwasync_runner;
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
    -- Jobs: no UPDATE of the name, state or slot columns (set_job_state changes the state).
    REVOKE INSERT, UPDATE ON dwasync.job FROM dwasync_admin;
    GRANT SELECT, DELETE ON dwasync.job TO dwasync_admin;
    GRANT INSERT (name, slot_name, publication_name, environment_url, legal_entities, options),
          UPDATE (environment_url, legal_entities, options, updated_at)
        ON dwasync.job TO dwasync_admin;
    GRANT SELECT, INSERT, UPDATE, DELETE ON dwasync.table_group, dwasync.table_map,
                                            dwasync.target_max_length
        TO dwasync_admin;
    GRANT SELECT, INSERT ON dwasync.checkpoint TO dwasync_admin;
    GRANT SELECT ON dwasync.apply_stat, dwasync.error, dwasync.schema_version, dwasync.runner
        TO dwasync_admin;
    GRANT EXECUTE ON FUNCTION dwasync.purge_errors(integer, bigint),
                              dwasync.alert_state(bigint),
                              dwasync.set_job_state(text, text, boolean)
        TO dwasync_admin;

    -- The daemon: reads jobs and maps, writes its checkpoint, statistics, runner row and
    -- error rows, records the initial sync's progress and pauses a job on its alert rule.
    GRANT SELECT ON dwasync.job, dwasync.table_group, dwasync.table_map,
                    dwasync.target_max_length, dwasync.schema_version
        TO dwasync_runner;
    GRANT UPDATE (state, state_reason, initial_sync, updated_at) ON dwasync.job TO dwasync_runner;
    GRANT SELECT, INSERT, UPDATE ON dwasync.checkpoint, dwasync.apply_stat, dwasync.runner,
                                    dwasync.error
        TO dwasync_runner;
    GRANT DELETE ON dwasync.error, dwasync.apply_stat TO dwasync_runner;
    GRANT EXECUTE ON FUNCTION dwasync.insert_errors(jsonb),
                              dwasync.key_queue(bigint, bigint, text),
                              dwasync.promote_next(bigint, bigint, text, text),
                              dwasync.notify_replay(bigint),
                              dwasync.replay_succeeded(bigint),
                              dwasync.replay_failed(bigint, text, integer, text, text, jsonb, text, text),
                              dwasync.promote_orphans(bigint),
                              dwasync.purge_errors(integer, bigint),
                              dwasync.alert_state(bigint),
                              dwasync.enforce_alert_rule(bigint),
                              dwasync.replay_listeners(text),
                              dwasync.valid_alert_rule(jsonb)
        TO dwasync_runner;
END $$;

REVOKE ALL ON FUNCTION dwasync.apply_role_grants() FROM PUBLIC;
SELECT dwasync.apply_role_grants();
