-- 030: the runner of each job: which process is active for it (high availability), its
-- heartbeat, and its view of Dataverse throttling, for `dwasync status` and `dwasync check`.
-- Only the process holding the job's advisory lock writes the row (ha.h), so there is at
-- most one writer per job; standbys never write it.
CREATE TABLE dwasync.runner (
    job_id          bigint PRIMARY KEY REFERENCES dwasync.job (id) ON DELETE CASCADE,
    host            text NOT NULL,
    pid             integer NOT NULL,
    version         text NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    heartbeat_at    timestamptz NOT NULL DEFAULT now(),
    status          text NOT NULL DEFAULT '',          -- the systemd STATUS= line
    throttled_until timestamptz,                       -- Retry-After of the last 429, if later than now
    throttled_total bigint NOT NULL DEFAULT 0          -- 429 responses since the runner started
);

COMMENT ON TABLE dwasync.runner IS 'active dwasync process per job: heartbeat, status line, throttling';
