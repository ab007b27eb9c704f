-- 022: the string lengths Dataverse allows in the columns a job writes.
--
-- `dwasync job start` reads each mapped table's metadata to validate the maps; it records
-- the MaxLength of every mapped String and Memo column here. The daemon and replays load
-- them with the maps, so a longer value is a mapping error in dwasync.error and no request
-- is sent (Dataverse would refuse it with 0x80044331). Refreshed at every job start.
CREATE TABLE dwasync.target_max_length (
    job_id       bigint NOT NULL REFERENCES dwasync.job (id) ON DELETE CASCADE,
    logical_name text NOT NULL,
    attribute    text NOT NULL,
    max_length   integer NOT NULL CHECK (max_length > 0),
    PRIMARY KEY (job_id, logical_name, attribute)
);

COMMENT ON TABLE dwasync.target_max_length IS
    'dwasync: MaxLength of the Dataverse string columns a job writes, recorded by job start';
