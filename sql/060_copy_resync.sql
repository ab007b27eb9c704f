-- 060: online resync. A copy request (sql/050) is now of one kind: 'initial' (planned by the
-- daemon for a pending initial sync; stream changes to rows the copy has not reached are
-- skipped), 'resync' (`dwasync job resync`) or 'repair' (`dwasync verify --repair`); the
-- last two copy rows that Dataverse already holds, so the daemon never skips a stream change
-- for them. Each is copied in chunks between watermarks, interleaved with the stream, on the
-- job's slot (include/dwasync/snapshot.h). `condition` holds the whole predicate the copy
-- reads under (the maps' filters and legal entities, and the operator's --where), checked by
-- the CLI and again by the daemon before it runs it in a read-only transaction. rows_total
-- (counted when queued) and started_at give `dwasync status` its rate and ETA.
ALTER TABLE dwasync.copy_request
    ADD COLUMN kind text NOT NULL DEFAULT 'initial'
        CHECK (kind IN ('initial', 'resync', 'repair')),
    ADD COLUMN map_name text,         -- the map asked for (informational); NULL: every map
    ADD COLUMN rows_total bigint,     -- rows the condition matched when queued; NULL: unknown
    ADD COLUMN started_at timestamptz;

COMMENT ON TABLE dwasync.copy_request IS
    'copies of source rows interleaved with the stream (initial sync, resync, repair): resume at last_key after a crash';

-- The admin role queues resyncs (`dwasync job resync`) and verify's repairs.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'dwasync_admin') THEN
        GRANT INSERT ON dwasync.copy_request TO dwasync_admin;
    END IF;
END $$;
