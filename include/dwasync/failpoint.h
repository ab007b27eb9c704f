/*
 * failpoint.h - named fault-injection points, so crash tests stop the daemon at exactly the
 * step they mean instead of killing it at a random moment (PostgreSQL's injection points,
 * FreeBSD's fail(9) and TiKV's fail-rs work the same way).
 *
 * A point is a name in the code, reached through DW_FAILPOINT("after_apply_before_checkpoint").
 * Points are armed by the environment variable DWASYNC_FAILPOINTS, read once at start-up:
 *
 *     DWASYNC_FAILPOINTS="name:action[@N][,name:action[@N]...]"
 *
 * action is "crash" (the process kills itself with SIGKILL, as kill -9 would) or "error"
 * (DW_FAILPOINT evaluates to true and the caller fails the step as if its I/O had failed).
 * Without @N a crash fires the first time the point is reached and an error every time; with
 * @N either fires only the N-th time. Before it fires, a point writes one line to stderr,
 * `failpoint "name" fired (action, hit N)`, which tests read to know which point stopped
 * the process. Unarmed, a point costs one load and one branch: points are compiled into
 * every build. State is process-global and not thread-safe (dwasync has one thread).
 */
#ifndef DWASYNC_FAILPOINT_H
#define DWASYNC_FAILPOINT_H

#include <stdbool.h>

#include "dwasync/rc.h"

/* True while any point is armed; read by DW_FAILPOINT before the name is looked at. */
extern bool dw_failpoints_armed;

/* True if the point should fail the caller's step now; does not return if it crashes. */
#define DW_FAILPOINT(name) (dw_failpoints_armed && dw_failpoint_hit(name))

/* Counts a hit of the named point and fires its action if this hit is the one armed. */
bool dw_failpoint_hit(const char *name);

/*
 * Arms the points of a DWASYNC_FAILPOINTS text, replacing any armed before (NULL or "" disarms
 * every point). Returns DW_ERR_INVALID, with a message on stderr, for a malformed text, and
 * then arms nothing. Called at start-up with the environment's value; tests call it directly.
 */
dw_rc dw_failpoints_configure(const char *spec);

#endif
