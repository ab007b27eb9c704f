/*
 * ha.h - one active `dwasync run` per job, any number of standbys.
 *
 * The active runner holds an EXCLUSIVE lock on its job's empty table dwasync.job_lock_<id>
 * (sql/051, created by dwasync.job_lock_relation()), taken with LOCK TABLE ... NOWAIT in a
 * transaction kept open on a dedicated session that this module opens itself
 * (application_name DW_HA_LOCK_APPNAME), with the same connection parameters as the
 * borrowed control connection. Only roles with UPDATE on that table (its owner, the runner
 * role) can take the lock, so a role with mere CONNECT cannot squat it and stall
 * replication (any role can take any advisory lock). A table lock takes no transaction id:
 * the open transaction holds back neither vacuum nor the creation of a logical slot.
 * A standby tries the lock without blocking every poll interval (NOWAIT never waits,
 * so the event loop keeps turning and the standby's /healthz keeps answering). When the
 * active process dies, its session ends and the server releases the lock: at once when
 * the process is killed (the kernel closes the socket), within the TCP keepalive time when
 * its host vanishes (use keepalives_idle=5 keepalives_interval=2 keepalives_count=3 in the
 * control conninfo), so a standby takes over within one poll interval after that.
 * dwasync.job_lock_holder(job_id) names the session holding a job's lock (status, check).
 *
 * Double-apply out of order cannot happen: the new active runner starts from the slot's
 * confirmed position (only ever advanced after durable apply, the checkpoint rule), and
 * the slot itself admits one walsender at a time, so even a runner that lost its control
 * session cannot stream alongside its successor. A runner must call dw_ha_check() before
 * each checkpoint and stop applying when it reports the lock lost.
 *
 * A struct dw_ha is caller-owned (init/cleanup); the connection is borrowed (heartbeats are
 * written on it, and the lock session copies its parameters) and must outlive it; the lock
 * session is owned and closed by dw_ha_cleanup().
 */
#ifndef DWASYNC_HA_H
#define DWASYNC_HA_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "dwasync/rc.h"

/* application_name of the session that holds a job lock. */
#define DW_HA_LOCK_APPNAME "dwasync job lock"

/* Default interval between lock attempts of a standby. */
#define DW_HA_DEFAULT_POLL_MS 2000

struct dw_ha {
    PGconn *conn; /* borrowed */
    PGconn *lock; /* owned: the session whose open transaction holds the row lock */
    int64_t job_id;
    uint64_t poll_ms;
    uint64_t next_try_ms; /* monotonic time of the next attempt */
    bool active;
};

/* Prepares the state for job_id on conn; poll_ms 0 means DW_HA_DEFAULT_POLL_MS. */
void dw_ha_init(struct dw_ha *ha, PGconn *conn, int64_t job_id, uint64_t poll_ms);

/*
 * Tries the lock if it is not held and the poll time has come (now_ms is monotonic);
 * *active says whether this process is now the active runner. Never blocks on the lock.
 * DW_ERR_PG (logged) when the connection failed: the caller reconnects and starts over
 * as a standby.
 */
dw_rc dw_ha_try(struct dw_ha *ha, uint64_t now_ms, bool *active);

/* Milliseconds until the next attempt is due (0 when due or active, for poll timeouts). */
int dw_ha_timeout_ms(const struct dw_ha *ha, uint64_t now_ms);

/*
 * Confirms the lock is still held by this process's lock session (its transaction still
 * locks the row). DW_ERR_STATE when the session lives but does not hold it; DW_ERR_PG when
 * the session is gone (the server released the lock with it). Either way this process is no
 * longer active: the caller stops reading new changes and calls dw_ha_try() (with backoff)
 * to take the lock again, and becomes a standby when dw_ha_try() finds it held elsewhere.
 */
dw_rc dw_ha_check(struct dw_ha *ha);

/* What the active runner reports in dwasync.runner (sql/030_runner.sql). */
struct dw_ha_report {
    const char *status;           /* one line, as sent to systemd STATUS= (may be NULL) */
    double throttled_for_seconds; /* Retry-After still pending from the last 429; 0 if none */
    int64_t throttled_total;      /* 429 responses since start */
};

/*
 * Upserts this process's row in dwasync.runner (host, pid, version, heartbeat now). Only
 * while active; a standby gets DW_ERR_STATE and writes nothing. Call every few seconds.
 */
dw_rc dw_ha_heartbeat(struct dw_ha *ha, const struct dw_ha_report *report);

/* Releases the lock if held, before it returns (clean shutdown lets a standby take over, and
 * a command run next find the job free, without waiting for the session's backend to exit). */
void dw_ha_cleanup(struct dw_ha *ha);

#endif
