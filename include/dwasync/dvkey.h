/*
 * dvkey.h - Dataverse key addressing: OData literals, URL segments, $filter fallbacks.
 *
 * Turns a key object of struct dw_write (alternate-key attribute -> scalar, lookup parts
 * "_<lookup>_value" already resolved to GUID strings) into the text Dataverse expects:
 * the "k1='v',k2=5" segment of /<set>(...) and, for values a URL cannot carry, a
 * "$filter=k1 eq 'v' and ..." query. Everything here is pure string work: no allocation
 * outlives a call except what is appended to the caller's dw_buf.
 */
#ifndef DWASYNC_DVKEY_H
#define DWASYNC_DVKEY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "dwasync/buf.h"
#include "dwasync/rc.h"

/* Characters Dataverse cannot take in a key segment, even percent-encoded. */
#define DW_DVKEY_UNADDRESSABLE "/<>*%&:\\?+"

/*
 * True when s is a Dataverse identifier (entity set, logical name, attribute, navigation
 * property): ^[A-Za-z_][A-Za-z0-9_]*$, at most 128 characters. Checked when a map is
 * imported or loaded and again before a request is built, so no name can carry a CR/LF, a
 * slash or a quote into a URL or a $batch part.
 */
bool dw_dvkey_identifier_ok(const char *s);

/*
 * True when every attribute name in key, and the "$ref" set of every reference object in v
 * (nested to any depth), is an identifier (dw_dvkey_identifier_ok). NULL is fine.
 */
bool dw_dvkey_names_ok(const json_t *v);

/* True when s is a GUID in the 8-4-4-4-12 hex form. */
bool dw_dvkey_is_guid(const char *s);

/* True for a reference object {"$ref": "<set>", "key": {...}}. */
bool dw_dvkey_is_ref(const json_t *v);

/* True for a key part named "_<lookup>_value" (written unquoted as a GUID). */
bool dw_dvkey_is_lookup_part(const char *name);

/* True when no string value in key holds a character of DW_DVKEY_UNADDRESSABLE. */
bool dw_dvkey_addressable(const json_t *key);

/*
 * Appends the OData literal of a scalar: strings single-quoted with embedded quotes
 * doubled, integers and reals as numbers, booleans as true/false. A GUID string is written
 * bare when bare_guid is set (lookup parts). DW_ERR_INVALID for null, arrays and objects.
 */
dw_rc dw_dvkey_literal(struct dw_buf *b, const json_t *v, bool bare_guid);

/*
 * Appends s percent-encoded for a URL path or query: every byte except the RFC 3986
 * unreserved characters and the single quote becomes %XX (UTF-8 bytes one by one).
 */
dw_rc dw_dvkey_encode(struct dw_buf *b, const char *s, size_t len);

/*
 * Appends a Web API path and query as a person types it (`dwasync dataverse get
 * "accounts?$filter=name eq 'x'"`) made fit for a URL: spaces, control and non-ASCII bytes,
 * the characters " # < > \ ^ ` { | } and a '%' not followed by two hex digits become %XX;
 * the URL's own syntax (/ ? & = $ ' ( ) , ...) and escapes already present are kept.
 */
dw_rc dw_dvkey_encode_path(struct dw_buf *b, const char *s);

/*
 * Appends the key segment "k1='v1',k2=5" (without parentheses) of a key whose lookup parts
 * hold GUID strings, percent-encoded for a URL when encode is set (JSON values such as
 * @odata.id and @odata.bind take it as is). DW_ERR_INVALID for an empty key, a reference
 * object or a non-scalar value.
 */
dw_rc dw_dvkey_segment(struct dw_buf *b, const json_t *key, bool encode);

/*
 * "<entity set>(<canonical JSON of the key>)", references included: the identity of a
 * target row as the mapping engine names it (its target id) and the sink names a row in
 * its messages. Caller frees.
 */
char *dw_dvkey_target_id(const char *entity_set, const json_t *key);
/* The same appended to b (nothing appended on failure). */
dw_rc dw_dvkey_append_target_id(struct dw_buf *b, const char *entity_set, const json_t *key);

/*
 * Appends the percent-encoded filter expression "k1 eq 'v1' and k2 eq 5" for the $filter
 * fallback. Same rules as dw_dvkey_segment.
 */
dw_rc dw_dvkey_filter(struct dw_buf *b, const json_t *key);

#endif
