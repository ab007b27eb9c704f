-- 010: what map files need beyond 002: a job's legal entities, the order of table groups,
-- maps that always belong to a group of their own job, and sequences that may be swapped
-- inside one import transaction.

ALTER TABLE dwasync.job
    ADD COLUMN legal_entities text[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN dwasync.job.legal_entities IS
    'dataAreaId codes this job syncs (empty: all); filters every company-striped map';

ALTER TABLE dwasync.table_group
    ADD COLUMN position integer NOT NULL DEFAULT 0 CHECK (position >= 0),
    ADD UNIQUE (id, job_id);
COMMENT ON COLUMN dwasync.table_group.position IS 'order of the group in the map file';

-- A map's group belongs to the same job as the map.
ALTER TABLE dwasync.table_map
    ADD FOREIGN KEY (group_id, job_id) REFERENCES dwasync.table_group (id, job_id)
        ON DELETE CASCADE;

-- Re-importing a map file may swap two sequences in a group; the uniqueness is what must
-- hold at commit, not after every statement.
ALTER TABLE dwasync.table_map DROP CONSTRAINT table_map_group_id_sequence_key;
ALTER TABLE dwasync.table_map
    ADD CONSTRAINT table_map_group_id_sequence_key UNIQUE (group_id, sequence)
        DEFERRABLE INITIALLY IMMEDIATE;
