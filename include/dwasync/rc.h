/*
 * rc.h - return codes shared by every dwasync module.
 *
 * Every function that can fail returns a dw_rc; DW_OK (0) means success. A code names the
 * kind of failure, the log line written where the failure was best described carries the
 * detail (table, key, LSN, HTTP status, Dataverse code). Codes are stable: they appear in
 * exit statuses of the CLI and in tests, so add new ones at the end of the enum.
 */
#ifndef DWASYNC_RC_H
#define DWASYNC_RC_H

typedef enum dw_rc {
    DW_OK = 0,
    DW_ERR_INVALID,     /* invalid argument or input (bad option, bad value) */
    DW_ERR_CONFIG,      /* configuration file or setting is wrong */
    DW_ERR_IO,          /* file or socket I/O failed */
    DW_ERR_PROTOCOL,    /* a peer sent malformed or unexpected bytes */
    DW_ERR_PG,          /* a PostgreSQL command or connection failed */
    DW_ERR_HTTP,        /* an HTTP exchange failed */
    DW_ERR_AUTH,        /* authentication or authorization failed */
    DW_ERR_NOT_FOUND,   /* the named object does not exist */
    DW_ERR_RANGE,       /* a value is outside what the target can hold */
    DW_ERR_MAPPING,     /* a row cannot be mapped through its table map */
    DW_ERR_SECRET,      /* a secret file is missing, unreadable or unsafe */
    DW_ERR_TIMEOUT,     /* an operation did not finish in time */
    DW_ERR_RETRY,       /* a transient failure: try again later */
    DW_ERR_STATE,       /* the object is in the wrong state for this operation */
    DW_ERR_VERSION,     /* incompatible version (server, schema) */
    DW_ERR_UNSUPPORTED, /* the feature or value is not supported */
    DW_ERR_INTERRUPTED, /* stopped by a signal or shutdown request */
    DW_ERR_EXISTS,      /* the object already exists */
    DW_ERR__COUNT
} dw_rc;

/* Name of a code for log lines ("protocol error"); never NULL. */
const char *dw_rc_str(dw_rc rc);

/* Exit status the CLI uses for a code: 0 for DW_OK, otherwise 1 (usage errors use 2). */
int dw_rc_exit_status(dw_rc rc);

#endif
