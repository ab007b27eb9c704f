/*
 * json.h - how dwasync serializes JSON (jansson) everywhere: payloads, error rows, output.
 *
 * Numbers: a value that reaches jansson is an integer (json_integer, exact in int64) or a
 * real with at most DW_JSON_REAL_DIGITS significant digits, dumped with exactly that
 * precision so that the decimal text the source wrote comes back out unchanged (0.1 stays
 * "0.1", 1234567.890000 stays 1234567.89). A Postgres numeric with more significant digits
 * than that is not put through a double at all: values.h reports it as unrepresentable.
 *
 * Canonical form (sorted keys, compact) gives row identities: two keys are the same row
 * exactly when their canonical texts are equal.
 *
 * The texts are exactly json_dumps()'s with DW_JSON_FLAGS (and JSON_SORT_KEYS for the
 * canonical form), written by dwasync's own writer, which is several times faster than
 * jansson's on the hot paths (row images, keys, bulk request bodies).
 */
#ifndef DWASYNC_JSON_H
#define DWASYNC_JSON_H

#include <jansson.h>
#include <stdbool.h>

#include "dwasync/buf.h"
#include "dwasync/rc.h"

/* Significant digits a JSON real keeps exactly through a double. */
#define DW_JSON_REAL_DIGITS 15

/* Flags for every json_dumps() in dwasync. */
#define DW_JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(DW_JSON_REAL_DIGITS))

/* Compact dump with DW_JSON_FLAGS; caller frees. Aborts on allocation failure. */
char *dw_json_dumps(const json_t *value);

/* Dump with sorted keys: the identity of a key or row. Caller frees. */
char *dw_json_canonical(const json_t *value);

/*
 * The same texts appended to b (nothing is appended on failure): the compact dump, the
 * canonical one, and an object's members without its braces (to splice into an object
 * being written). DW_ERR_INVALID for NULL (or a non-object for members).
 */
dw_rc dw_json_append(struct dw_buf *b, const json_t *value);
dw_rc dw_json_append_canonical(struct dw_buf *b, const json_t *value);
dw_rc dw_json_append_members(struct dw_buf *b, const json_t *object);

/* Appends one member, "name":value compact, after a comma unless it is the first. */
dw_rc dw_json_append_member(struct dw_buf *b, const char *name, const json_t *value, bool first);

#endif
