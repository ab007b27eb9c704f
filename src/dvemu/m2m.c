/* dvemu's many-to-many relationships ("Associate and disassociate table rows using the Web
 * API"): an association is a row of the relationship's intersect table holding the two
 * primary ids, written through emu_row_put so that changesets roll it back, the history shows
 * it and --state keeps it. Lookups scan the intersect table: an emulator's relationships are
 * small. Everything here runs under emu->store_lock. */
#include <stdlib.h>
#include <string.h>

#include "dwasync/alloc.h"
#include "internal.h"

const struct emu_m2m *emu_m2m_find(const struct emu *emu, const struct emu_table *t,
                                   const char *nav, size_t len, int *side)
{
    for (size_t i = 0; i < emu->nm2m; i++)
        for (int s = 0; s < 2; s++) {
            const struct emu_m2m *m = &emu->m2m[i];
            if (m->t[s] == t && strlen(m->nav[s]) == len && strncmp(m->nav[s], nav, len) == 0) {
                *side = s;
                return m;
            }
        }
    return NULL;
}

/* Whether an intersect row relates id (as t[side]) and other_id (NULL: any row). */
static bool relates(const struct emu_m2m *m, const json_t *row, int side, const char *id,
                    const char *other_id)
{
    const char *mine = json_string_value(json_object_get(row, m->t[side]->primary_id));
    const char *theirs = json_string_value(json_object_get(row, m->t[1 - side]->primary_id));
    return mine && theirs && strcmp(mine, id) == 0 &&
           (other_id == NULL || strcmp(theirs, other_id) == 0);
}

static struct emu_row *pair_find(const struct emu_m2m *m, int side, const char *id,
                                 const char *other_id)
{
    for (struct emu_row *r = m->intersect->rows; r; r = r->hh.next)
        if (relates(m, r->data, side, id, other_id))
            return r;
    return NULL;
}

json_t *emu_m2m_related(const struct emu_m2m *m, int side, const char *id)
{
    json_t *out = json_array();
    struct emu_table *other = m->t[1 - side];
    for (struct emu_row *r = m->intersect->rows; r; r = r->hh.next) {
        if (!relates(m, r->data, side, id, NULL))
            continue;
        const char *oid = json_string_value(json_object_get(r->data, other->primary_id));
        struct emu_row *o = emu_row_find_id(other, oid);
        if (o)
            json_array_append_new(out, emu_row_public(other, o->data));
    }
    return out;
}

dw_rc emu_m2m_associate(struct emu *emu, const struct emu_m2m *m, int side, const char *id,
                        const char *other_id, struct emu_err *err)
{
    /* Dataverse's intersect rows are unique per pair: a second association is a duplicate. */
    if (pair_find(m, side, id, other_id)) {
        emu_err_set(err, 412, "0x80040237", "Cannot insert duplicate key.");
        return DW_ERR_EXISTS;
    }
    char rid[37];
    emu_new_guid(rid);
    json_t *row =
        json_pack("{s:s, s:s}", m->t[side]->primary_id, id, m->t[1 - side]->primary_id, other_id);
    emu_row_finish(emu, m->intersect, row, rid, true);
    emu_row_put(emu, m->intersect, rid, row, "create");
    json_decref(row);
    return DW_OK;
}

dw_rc emu_m2m_disassociate(struct emu *emu, const struct emu_m2m *m, int side, const char *id,
                           const char *other_id, struct emu_err *err)
{
    struct emu_row *r = pair_find(m, side, id, other_id);
    if (r == NULL) {
        emu_err_set(err, 404, "0x80040217",
                    "The row %s of %s is not associated with %s of %s through '%s'.", other_id,
                    m->t[1 - side]->logical, id, m->t[side]->logical, m->nav[side]);
        return DW_ERR_NOT_FOUND;
    }
    char rid[37];
    memcpy(rid, r->id, sizeof rid);
    emu_row_put(emu, m->intersect, rid, NULL, "delete");
    return DW_OK;
}

void emu_m2m_forget(struct emu *emu, const struct emu_table *t, const char *id)
{
    for (size_t i = 0; i < emu->nm2m; i++)
        for (int s = 0; s < 2; s++) {
            const struct emu_m2m *m = &emu->m2m[i];
            struct emu_row *r;
            while (m->t[s] == t && (r = pair_find(m, s, id, NULL)) != NULL) {
                char rid[37];
                memcpy(rid, r->id, sizeof rid);
                emu_row_put(emu, m->intersect, rid, NULL, "delete");
            }
        }
}
