/* OData pieces of dvemu: percent-decoding, key segments and $filter expressions. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dwasync/alloc.h"
#include "dwasync/buf.h"
#include "dwasync/dvemu.h"

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

dw_rc dw_dvemu_pct_decode(const char *s, size_t len, char **out)
{
    char *r = dw_malloc(len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            int hi = i + 1 < len ? hexval((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < len ? hexval((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(r);
                return DW_ERR_INVALID;
            }
            r[n++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (s[i] == '\0') {
            free(r);
            return DW_ERR_INVALID;
        } else {
            r[n++] = s[i];
        }
    }
    r[n] = '\0';
    *out = r;
    return DW_OK;
}

bool dw_dvemu_is_guid(const char *s, size_t len)
{
    if (len != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

/* A literal as OData URLs write it: 'text', a GUID, a number, true, false or null. Sets
 * *end past the literal. */
static dw_rc parse_literal(const char *p, const char **end, json_t **out)
{
    if (*p == '\'') {
        struct dw_buf b;
        dw_buf_init(&b, 0);
        p++;
        for (;;) {
            if (*p == '\0') {
                dw_buf_cleanup(&b);
                return DW_ERR_INVALID;
            }
            if (*p == '\'') {
                if (p[1] == '\'') {
                    (void)dw_buf_putc(&b, '\'');
                    p += 2;
                    continue;
                }
                p++;
                break;
            }
            (void)dw_buf_putc(&b, *p++);
        }
        *out = json_stringn(dw_buf_str(&b), b.len);
        dw_buf_cleanup(&b);
        *end = p;
        return *out ? DW_OK : DW_ERR_INVALID;
    }
    size_t n = 0;
    while (p[n] && (isalnum((unsigned char)p[n]) || p[n] == '-' || p[n] == '.' || p[n] == '+' ||
                    p[n] == ':'))
        n++;
    if (n == 0)
        return DW_ERR_INVALID;
    *end = p + n;
    if (dw_dvemu_is_guid(p, n)) {
        char g[37];
        for (size_t i = 0; i < 36; i++)
            g[i] = (char)tolower((unsigned char)p[i]);
        g[36] = '\0';
        *out = json_string(g);
        return DW_OK;
    }
    /* Dates and times (2026-11-22, 2026-11-22T10:00:00Z) are bare in OData; as ISO 8601
     * UTC texts they compare correctly as strings. */
    if (n >= 10 && isdigit((unsigned char)p[0]) && isdigit((unsigned char)p[3]) && p[4] == '-' &&
        p[7] == '-') {
        *out = json_stringn(p, n);
        return DW_OK;
    }
    if (n == 4 && strncmp(p, "true", 4) == 0) {
        *out = json_true();
        return DW_OK;
    }
    if (n == 5 && strncmp(p, "false", 5) == 0) {
        *out = json_false();
        return DW_OK;
    }
    if (n == 4 && strncmp(p, "null", 4) == 0) {
        *out = json_null();
        return DW_OK;
    }
    char *text = dw_strndup(p, n);
    char *e;
    errno = 0;
    long long v = strtoll(text, &e, 10);
    if (*e == '\0' && errno == 0) {
        *out = json_integer(v);
        free(text);
        return DW_OK;
    }
    errno = 0;
    double d = strtod(text, &e);
    /* OData writes decimals with an "m" suffix in some clients; accept it. */
    if (e != text && (*e == '\0' || ((*e == 'm' || *e == 'M') && e[1] == '\0')) && errno == 0) {
        *out = json_real(d);
        free(text);
        return DW_OK;
    }
    free(text);
    return DW_ERR_INVALID;
}

void dw_dvemu_key_cleanup(struct dw_dvemu_key *key)
{
    for (size_t i = 0; i < key->nparts; i++) {
        free(key->parts[i].name);
        json_decref(key->parts[i].value);
    }
    free(key->parts);
    key->parts = NULL;
    key->nparts = 0;
}

static bool is_name_char(int c)
{
    return isalnum(c) || c == '_';
}

dw_rc dw_dvemu_key_parse(const char *raw, size_t len, struct dw_dvemu_key *out)
{
    char *text = NULL;
    struct dw_dvemu_key k = {0};
    dw_rc rc = dw_dvemu_pct_decode(raw, len, &text);
    if (rc != DW_OK)
        goto out;
    rc = DW_ERR_INVALID;
    const char *p = text;
    for (;;) {
        while (*p == ' ')
            p++;
        const char *name = p;
        while (is_name_char((unsigned char)*p))
            p++;
        size_t name_len = (size_t)(p - name);
        while (*p == ' ')
            p++;
        char *pname = NULL;
        if (*p == '=' && name_len > 0) {
            pname = dw_strndup(name, name_len);
            p++;
            while (*p == ' ')
                p++;
        } else {
            if (k.nparts > 0)
                goto out;
            p = name; /* bare value: the primary id */
        }
        json_t *value;
        const char *end;
        if (parse_literal(p, &end, &value) != DW_OK) {
            free(pname);
            goto out;
        }
        k.parts = dw_realloc(k.parts, (k.nparts + 1) * sizeof *k.parts);
        k.parts[k.nparts].name = pname;
        k.parts[k.nparts].value = value;
        k.nparts++;
        p = end;
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        if (*p != ',' || pname == NULL)
            goto out;
        p++;
    }
    /* A bare value cannot be combined with named parts, and names must be unique. */
    for (size_t i = 0; i < k.nparts; i++)
        for (size_t j = i + 1; j < k.nparts; j++)
            if (k.parts[i].name && k.parts[j].name && strcmp(k.parts[i].name, k.parts[j].name) == 0)
                goto out;
    *out = k;
    k.parts = NULL;
    k.nparts = 0;
    rc = DW_OK;
out:
    dw_dvemu_key_cleanup(&k);
    free(text);
    return rc;
}

/* --- $filter --------------------------------------------------------------------------- */

enum fnode_kind { FN_AND, FN_OR, FN_NOT, FN_CMP, FN_FUNC };
enum fcmp { FC_EQ, FC_NE, FC_GT, FC_GE, FC_LT, FC_LE };
/* The string functions Dataverse's $filter takes ("Filter rows using OData"). */
enum ffunc { FF_CONTAINS, FF_STARTSWITH, FF_ENDSWITH };

struct dw_dvemu_filter {
    enum fnode_kind kind;
    enum fcmp op;
    enum ffunc func;
    char *path; /* FN_CMP, FN_FUNC: property path, '/' separated */
    json_t *value;
    struct dw_dvemu_filter *left, *right;
};

struct fparser {
    const char *p;
    char *err;
    bool final; /* err is the whole message (not a syntax error at a position) */
};

void dw_dvemu_filter_free(struct dw_dvemu_filter *f)
{
    if (f == NULL)
        return;
    dw_dvemu_filter_free(f->left);
    dw_dvemu_filter_free(f->right);
    free(f->path);
    json_decref(f->value);
    free(f);
}

static void skip_ws(struct fparser *fp)
{
    while (*fp->p == ' ' || *fp->p == '\t')
        fp->p++;
}

/* Consumes a keyword (followed by a non-name character) if it is next. */
static bool accept_word(struct fparser *fp, const char *w)
{
    skip_ws(fp);
    size_t n = strlen(w);
    if (strncmp(fp->p, w, n) == 0 && !is_name_char((unsigned char)fp->p[n]) && fp->p[n] != '/') {
        fp->p += n;
        return true;
    }
    return false;
}

static struct dw_dvemu_filter *parse_or(struct fparser *fp);

static struct dw_dvemu_filter *fail(struct fparser *fp, const char *what)
{
    (void)what; /* the caller reports the position, which says more */
    if (fp->err == NULL)
        fp->err = dw_strdup("syntax error");
    return NULL;
}

/* name(property,'text') for contains, startswith and endswith; takes ownership of name. Any
 * other function is refused with the OData library's message, as Dataverse answers it. */
static struct dw_dvemu_filter *parse_function(struct fparser *fp, char *name)
{
    static const struct {
        const char *name;
        enum ffunc func;
    } funcs[] = {
        {"contains", FF_CONTAINS}, {"startswith", FF_STARTSWITH}, {"endswith", FF_ENDSWITH}};
    struct dw_dvemu_filter *n = NULL;
    size_t i;
    for (i = 0; i < sizeof funcs / sizeof funcs[0]; i++)
        if (strcmp(name, funcs[i].name) == 0)
            break;
    if (i == sizeof funcs / sizeof funcs[0]) {
        free(fp->err);
        fp->err = dw_asprintf("An unknown function with name '%s' was found. This may also be a "
                              "function import or a key lookup on a navigation property, which "
                              "is not allowed.",
                              name);
        fp->final = true;
        goto out;
    }
    fp->p++; /* '(' */
    skip_ws(fp);
    const char *start = fp->p;
    while (is_name_char((unsigned char)*fp->p) || *fp->p == '/' || *fp->p == '.')
        fp->p++;
    if (fp->p == start) {
        fail(fp, "expected a property name");
        goto out;
    }
    n = dw_calloc(1, sizeof *n);
    n->kind = FN_FUNC;
    n->func = funcs[i].func;
    n->path = dw_strndup(start, (size_t)(fp->p - start));
    skip_ws(fp);
    const char *end;
    if (*fp->p != ',' || (fp->p++, skip_ws(fp), *fp->p != '\'') ||
        parse_literal(fp->p, &end, &n->value) != DW_OK) {
        dw_dvemu_filter_free(n);
        n = NULL;
        fail(fp, "expected a string literal");
        goto out;
    }
    fp->p = end;
    skip_ws(fp);
    if (*fp->p != ')') {
        dw_dvemu_filter_free(n);
        n = NULL;
        fail(fp, "expected ')'");
        goto out;
    }
    fp->p++;
out:
    free(name);
    return n;
}

static struct dw_dvemu_filter *parse_primary(struct fparser *fp)
{
    skip_ws(fp);
    if (*fp->p == '(') {
        fp->p++;
        struct dw_dvemu_filter *e = parse_or(fp);
        if (e == NULL)
            return NULL;
        skip_ws(fp);
        if (*fp->p != ')') {
            dw_dvemu_filter_free(e);
            return fail(fp, "expected ')'");
        }
        fp->p++;
        return e;
    }
    if (accept_word(fp, "not")) {
        struct dw_dvemu_filter *e = parse_primary(fp);
        if (e == NULL)
            return NULL;
        struct dw_dvemu_filter *n = dw_calloc(1, sizeof *n);
        n->kind = FN_NOT;
        n->left = e;
        return n;
    }
    const char *start = fp->p;
    while (is_name_char((unsigned char)*fp->p) || *fp->p == '/' || *fp->p == '.')
        fp->p++;
    if (fp->p == start)
        return fail(fp, "expected a property name");
    char *path = dw_strndup(start, (size_t)(fp->p - start));
    skip_ws(fp);
    if (*fp->p == '(')
        return parse_function(fp, path);
    static const struct {
        const char *w;
        enum fcmp op;
    } ops[] = {{"eq", FC_EQ}, {"ne", FC_NE}, {"gt", FC_GT},
               {"ge", FC_GE}, {"lt", FC_LT}, {"le", FC_LE}};
    size_t i;
    for (i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (accept_word(fp, ops[i].w))
            break;
    if (i == sizeof ops / sizeof ops[0]) {
        free(path);
        return fail(fp, "expected a comparison operator");
    }
    skip_ws(fp);
    json_t *value;
    const char *end;
    if (parse_literal(fp->p, &end, &value) != DW_OK) {
        free(path);
        return fail(fp, "expected a literal");
    }
    fp->p = end;
    struct dw_dvemu_filter *n = dw_calloc(1, sizeof *n);
    n->kind = FN_CMP;
    n->op = ops[i].op;
    n->path = path;
    n->value = value;
    return n;
}

static struct dw_dvemu_filter *parse_and(struct fparser *fp)
{
    struct dw_dvemu_filter *l = parse_primary(fp);
    while (l && accept_word(fp, "and")) {
        struct dw_dvemu_filter *r = parse_primary(fp);
        if (r == NULL) {
            dw_dvemu_filter_free(l);
            return NULL;
        }
        struct dw_dvemu_filter *n = dw_calloc(1, sizeof *n);
        n->kind = FN_AND;
        n->left = l;
        n->right = r;
        l = n;
    }
    return l;
}

static struct dw_dvemu_filter *parse_or(struct fparser *fp)
{
    struct dw_dvemu_filter *l = parse_and(fp);
    while (l && accept_word(fp, "or")) {
        struct dw_dvemu_filter *r = parse_and(fp);
        if (r == NULL) {
            dw_dvemu_filter_free(l);
            return NULL;
        }
        struct dw_dvemu_filter *n = dw_calloc(1, sizeof *n);
        n->kind = FN_OR;
        n->left = l;
        n->right = r;
        l = n;
    }
    return l;
}

dw_rc dw_dvemu_filter_parse(const char *text, struct dw_dvemu_filter **out, char **errmsg)
{
    struct fparser fp = {.p = text, .err = NULL};
    struct dw_dvemu_filter *f = parse_or(&fp);
    if (f != NULL) {
        skip_ws(&fp);
        if (*fp.p != '\0') {
            dw_dvemu_filter_free(f);
            f = NULL;
            fail(&fp, "unexpected text after the expression");
        }
    }
    if (f == NULL && fp.final) {
        *errmsg = fp.err;
        return DW_ERR_INVALID;
    }
    if (f == NULL) {
        /* Say where, as the OData library does ("at position N"). */
        free(fp.err);
        fp.err = dw_asprintf("Syntax error at position %zu in '%s'.", (size_t)(fp.p - text), text);
        *errmsg = fp.err;
        return DW_ERR_INVALID;
    }
    *out = f;
    return DW_OK;
}

static const json_t *lookup_path(const json_t *row, const char *path)
{
    const json_t *cur = row;
    const char *p = path;
    while (cur && json_is_object(cur)) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        cur = json_object_getn(cur, p, n);
        if (slash == NULL)
            return cur;
        p = slash + 1;
    }
    return NULL;
}

/* Length of s without trailing spaces: SQL Server (under Dataverse) pads the shorter
 * string with spaces before comparing, so 'a' = 'a  '. */
static size_t sql_len(const char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ')
        n--;
    return n;
}

/* Compares strings as Dataverse's collation does: case-insensitive, trailing spaces
 * ignored. */
static int collate(const char *a, const char *b)
{
    size_t na = sql_len(a), nb = sql_len(b);
    int c = strncasecmp(a, b, na < nb ? na : nb);
    if (c != 0)
        return c;
    return na < nb ? -1 : na > nb ? 1 : 0;
}

/* <0, 0, >0 as a compares with b; 2 when they are not comparable. */
static int compare(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        double x = json_number_value(a), y = json_number_value(b);
        return x < y ? -1 : x > y ? 1 : 0;
    }
    if (json_is_string(a) && json_is_string(b)) {
        int c = collate(json_string_value(a), json_string_value(b));
        return c < 0 ? -1 : c > 0 ? 1 : 0;
    }
    if (json_is_boolean(a) && json_is_boolean(b))
        return json_is_true(a) == json_is_true(b) ? 0 : json_is_true(a) ? 1 : -1;
    return 2;
}

bool dw_dvemu_filter_match(const struct dw_dvemu_filter *f, const json_t *row)
{
    switch (f->kind) {
    case FN_AND:
        return dw_dvemu_filter_match(f->left, row) && dw_dvemu_filter_match(f->right, row);
    case FN_OR:
        return dw_dvemu_filter_match(f->left, row) || dw_dvemu_filter_match(f->right, row);
    case FN_NOT:
        return !dw_dvemu_filter_match(f->left, row);
    case FN_FUNC: {
        const char *have = json_string_value(lookup_path(row, f->path));
        const char *want = json_string_value(f->value);
        size_t nh = have ? strlen(have) : 0, nw = want ? strlen(want) : 0;
        if (have == NULL || want == NULL || nw > nh)
            return false;
        if (f->func == FF_STARTSWITH)
            return strncasecmp(have, want, nw) == 0;
        if (f->func == FF_ENDSWITH)
            return strncasecmp(have + nh - nw, want, nw) == 0;
        for (size_t i = 0; i + nw <= nh; i++)
            if (strncasecmp(have + i, want, nw) == 0)
                return true;
        return false;
    }
    case FN_CMP:
        break;
    }
    const json_t *v = lookup_path(row, f->path);
    bool vnull = v == NULL || json_is_null(v);
    if (json_is_null(f->value)) {
        if (f->op == FC_EQ)
            return vnull;
        if (f->op == FC_NE)
            return !vnull;
        return false;
    }
    if (vnull)
        return f->op == FC_NE;
    int c = compare(v, f->value);
    if (c == 2)
        return f->op == FC_NE;
    switch (f->op) {
    case FC_EQ:
        return c == 0;
    case FC_NE:
        return c != 0;
    case FC_GT:
        return c > 0;
    case FC_GE:
        return c >= 0;
    case FC_LT:
        return c < 0;
    case FC_LE:
        return c <= 0;
    }
    return false;
}

bool dw_dvemu_filter_visit_paths(struct dw_dvemu_filter *f, bool (*visit)(char **path, void *user),
                                 void *user)
{
    if (f == NULL)
        return true;
    if ((f->kind == FN_CMP || f->kind == FN_FUNC) && !visit(&f->path, user))
        return false;
    return dw_dvemu_filter_visit_paths(f->left, visit, user) &&
           dw_dvemu_filter_visit_paths(f->right, visit, user);
}

/* Appends the "path eq literal" terms of a conjunction to key; false for any other shape. */
static bool conjunction_terms(const struct dw_dvemu_filter *f, struct dw_dvemu_key *key)
{
    if (f->kind == FN_AND)
        return conjunction_terms(f->left, key) && conjunction_terms(f->right, key);
    if (f->kind != FN_CMP || f->op != FC_EQ || json_is_null(f->value) || strchr(f->path, '/'))
        return false;
    key->parts = dw_realloc(key->parts, (key->nparts + 1) * sizeof *key->parts);
    key->parts[key->nparts].name = dw_strdup(f->path);
    key->parts[key->nparts++].value = json_incref(f->value);
    return true;
}

static bool disjunction_terms(const struct dw_dvemu_filter *f, struct dw_dvemu_key **keys,
                              size_t *nkeys)
{
    if (f->kind == FN_OR)
        return disjunction_terms(f->left, keys, nkeys) && disjunction_terms(f->right, keys, nkeys);
    *keys = dw_realloc(*keys, (*nkeys + 1) * sizeof **keys);
    struct dw_dvemu_key *key = &(*keys)[(*nkeys)++];
    memset(key, 0, sizeof *key);
    return conjunction_terms(f, key);
}

bool dw_dvemu_filter_key_terms(const struct dw_dvemu_filter *f, struct dw_dvemu_key **keys,
                               size_t *nkeys)
{
    *keys = NULL;
    *nkeys = 0;
    if (f != NULL && disjunction_terms(f, keys, nkeys))
        return true;
    for (size_t i = 0; i < *nkeys; i++)
        dw_dvemu_key_cleanup(&(*keys)[i]);
    free(*keys);
    *keys = NULL;
    *nkeys = 0;
    return false;
}
