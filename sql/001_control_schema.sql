-- 001: the dwasync schema and its version table.
-- Every later migration adds its objects to this schema; `dwasync init` records each
-- applied migration here in the same transaction that applies it.
CREATE SCHEMA IF NOT EXISTS dwasync;

COMMENT ON SCHEMA dwasync IS 'dwasync control schema: jobs, table maps, checkpoints, error table';

CREATE TABLE dwasync.schema_version (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
