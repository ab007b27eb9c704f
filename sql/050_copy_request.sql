-- 050: what an initial sync still has to copy, one row per source table of the job, and how
-- far it got. `dwasync run` plans the rows when a job's initial sync is pending, copies each
-- table in chunks in key order interleaved with the stream (watermarks, see
-- include/dwasync/snapshot.h) and records last_key once a chunk is checkpointed, so a crash
-- resumes at the next chunk on the same slot. An online resync can add rows with a condition.
CREATE TABLE dwasync.copy_request (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id        bigint NOT NULL REFERENCES dwasync.job (id) ON DELETE CASCADE,
    ord           integer NOT NULL,              -- copy order: the maps' sequence, parents first
    source_schema text NOT NULL,
    source_table  text NOT NULL,
    condition     text,                          -- SQL condition on the rows; NULL: all rows
    last_key      jsonb,                         -- key texts of the last row copied and checkpointed
    emitted_key   jsonb,                         -- last key handed to the apply path (maybe not applied)
    rows_copied   bigint NOT NULL DEFAULT 0,
    done          boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, ord)
);

COMMENT ON TABLE dwasync.copy_request IS
    'initial sync progress per job and source table: resumes at last_key after a crash';

REVOKE ALL ON dwasync.copy_request FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'dwasync_admin') THEN
        GRANT SELECT ON dwasync.copy_request TO dwasync_admin;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'dwasync_runner') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON dwasync.copy_request TO dwasync_runner;
    END IF;
END $$;
