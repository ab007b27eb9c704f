-- 061: `dwasync verify`: each run and the drift it found, by class, readable from psql.
-- A row of verify_result is one Dataverse row that differs from what the maps make of the
-- source: 'missing' (the source has it, Dataverse does not), 'extra' (Dataverse has it, no
-- source row maps to it), 'different' (both, with the columns that differ). expected is what
-- the mapping produces, actual what Dataverse holds (lookups as "<set>(<key>)" texts);
-- source_key names the source row (its primary key), dv_key the Dataverse row (its
-- alternate key) so that --repair can write the fix.
CREATE TABLE dwasync.verify_run (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      bigint NOT NULL REFERENCES dwasync.job (id) ON DELETE CASCADE,
    maps        text[] NOT NULL,
    repair      boolean NOT NULL DEFAULT false,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    source_rows bigint NOT NULL DEFAULT 0,
    target_rows bigint NOT NULL DEFAULT 0,
    missing     bigint NOT NULL DEFAULT 0,
    extra       bigint NOT NULL DEFAULT 0,
    different   bigint NOT NULL DEFAULT 0
);

CREATE TABLE dwasync.verify_result (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      bigint NOT NULL REFERENCES dwasync.verify_run (id) ON DELETE CASCADE,
    table_map   text NOT NULL,
    entity_set  text NOT NULL,
    class       text NOT NULL CHECK (class IN ('missing', 'extra', 'different')),
    target_id   text NOT NULL,
    columns     text[],             -- 'different': the attributes that differ
    source_key  jsonb,              -- primary key columns of the source row (missing, different)
    dv_key      jsonb,              -- alternate key of the Dataverse row (extra, different)
    expected    jsonb,
    actual      jsonb
);
CREATE INDEX verify_result_run ON dwasync.verify_result (run_id, class);

COMMENT ON TABLE dwasync.verify_result IS
    'drift found by dwasync verify: missing, extra and different Dataverse rows per run';

REVOKE ALL ON dwasync.verify_run, dwasync.verify_result FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'dwasync_triage') THEN
        GRANT SELECT ON dwasync.verify_run, dwasync.verify_result TO dwasync_triage;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'dwasync_admin') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON dwasync.verify_run, dwasync.verify_result
            TO dwasync_admin;
    END IF;
END $$;
