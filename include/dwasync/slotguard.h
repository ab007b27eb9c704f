/*
 * slotguard.h - the one check made before dwasync streams from or drops a replication slot.
 *
 * A job's slot is named after the job ("dwasync_<job>", the control schema enforces it) and
 * must be a logical slot of the pgoutput plugin in the database dwasync is connected to:
 * anything else belongs to someone else (a physical standby, another subscriber) and is
 * refused before it is read or dropped. Stateless; nothing is allocated for the caller.
 */
#ifndef DWASYNC_SLOTGUARD_H
#define DWASYNC_SLOTGUARD_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "dwasync/rc.h"

/* The prefix of every slot and publication name: "dwasync_" followed by the job name. */
#define DW_SLOT_PREFIX "dwasync_"

/*
 * The rule itself, without logging (for `check`, which reports findings): DW_ERR_STATE with
 * why filled ("replication slot ... is not job ...'s: <what it is>") when slot is not job's
 * own; DW_ERR_PG (logged) when the query fails; *exists (may be NULL) set on success.
 */
dw_rc dw_slotguard_judge(PGconn *conn, const char *job, const char *slot, bool *exists, char *why,
                         size_t why_size);

/*
 * Checks that slot is job's own and, when it exists on conn's server, that it is a logical
 * pgoutput slot of conn's database. conn may be a normal or a replication (database)
 * connection: only the simple query protocol is used. *exists (may be NULL) says whether
 * the slot exists; it is set only on success. Refusals are logged here with the job and the
 * slot and return DW_ERR_STATE; a failed query returns DW_ERR_PG.
 */
dw_rc dw_slotguard_check(PGconn *conn, const char *job, const char *slot, bool *exists);

/* dw_slotguard_check on a connection of its own to conninfo (the daemon, before it streams). */
dw_rc dw_slotguard_verify(const char *conninfo, const char *job, const char *slot);

#endif
