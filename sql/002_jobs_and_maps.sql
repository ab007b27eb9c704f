-- 002: integration jobs, table groups, table maps, checkpoints and apply statistics.
-- A job holds table maps organised in table groups; inside a group each map has a
-- sequence (lower first: parents before children). Maps of an active job are not changed
-- (stop the job first); the CLI enforces that, the trigger below backs it up.

CREATE TABLE dwasync.job (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_]{0,47}$'),
    state            text NOT NULL DEFAULT 'stopped'
                     CHECK (state IN ('stopped', 'starting', 'active', 'paused', 'failed')),
    state_reason     text,
    environment_url  text NOT NULL DEFAULT '',
    slot_name        text NOT NULL UNIQUE CHECK (slot_name ~ '^[a-z0-9_]{1,63}$'),
    publication_name text NOT NULL UNIQUE CHECK (publication_name ~ '^[a-z0-9_]{1,63}$'),
    initial_sync     text NOT NULL DEFAULT 'none'
                     CHECK (initial_sync IN ('none', 'pending', 'running', 'done')),
    options          jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    stopped_at       timestamptz
);

CREATE TABLE dwasync.table_group (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id bigint NOT NULL REFERENCES dwasync.job (id) ON DELETE CASCADE,
    name   text NOT NULL,
    UNIQUE (job_id, name)
);

CREATE TABLE dwasync.table_map (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id              bigint NOT NULL REFERENCES dwasync.job (id) ON DELETE CASCADE,
    group_id            bigint NOT NULL REFERENCES dwasync.table_group (id) ON DELETE CASCADE,
    sequence            integer NOT NULL CHECK (sequence >= 0),
    name                text NOT NULL,
    source_schema       text NOT NULL DEFAULT 'public',
    source_table        text NOT NULL,
    target_entity_set   text NOT NULL,
    target_logical_name text NOT NULL,
    key_mapping         jsonb NOT NULL,               -- alternate key: target attribute -> source
    column_mappings     jsonb NOT NULL DEFAULT '[]',  -- columns, constants, value maps, lookups
    filter              jsonb,                        -- row filter, compiled to the publication
    options             jsonb NOT NULL DEFAULT '{}',
    version             integer NOT NULL DEFAULT 1,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (group_id, sequence),
    UNIQUE (job_id, name)
);
CREATE INDEX ON dwasync.table_map (job_id, source_schema, source_table);

-- Where each job's stream is durably applied up to (the slot's confirmed position follows).
CREATE TABLE dwasync.checkpoint (
    job_id           bigint PRIMARY KEY REFERENCES dwasync.job (id) ON DELETE CASCADE,
    confirmed_lsn    pg_lsn NOT NULL DEFAULT '0/0',
    last_commit_time timestamptz,
    last_applied_at  timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Rows applied and failed per job and minute: throughput for status views and metrics.
CREATE TABLE dwasync.apply_stat (
    job_id       bigint NOT NULL REFERENCES dwasync.job (id) ON DELETE CASCADE,
    minute       timestamptz NOT NULL,
    rows_applied bigint NOT NULL DEFAULT 0,
    rows_failed  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, minute)
);

-- Maps of an active or paused job cannot change: stop the job first, as in dual-write.
CREATE FUNCTION dwasync.refuse_map_change_while_running() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    j record;
BEGIN
    SELECT name, state INTO j FROM dwasync.job
     WHERE id = coalesce(NEW.job_id, OLD.job_id);
    IF j.state IN ('active', 'starting', 'paused') THEN
        RAISE EXCEPTION 'job "%" is %: stop it before changing its table maps', j.name, j.state
            USING ERRCODE = 'object_in_use', HINT = 'Run dwasync job stop ' || j.name || '.';
    END IF;
    RETURN coalesce(NEW, OLD);
END $$;

CREATE TRIGGER table_map_frozen_while_running
    BEFORE INSERT OR UPDATE OR DELETE ON dwasync.table_map
    FOR EACH ROW EXECUTE FUNCTION dwasync.refuse_map_change_while_running();
CREATE TRIGGER table_group_frozen_while_running
    BEFORE INSERT OR UPDATE OR DELETE ON dwasync.table_group
    FOR EACH ROW EXECUTE FUNCTION dwasync.refuse_map_change_while_running();
