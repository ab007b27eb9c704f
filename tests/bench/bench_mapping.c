/*
 * Mapping engine throughput: customer rows (value maps, three lookups with nested company
 * references, a constant, eleven columns) through the sample job's two customer maps.
 * The peer measured in the same run is the floor any mapper pays per row: building the
 * row object from JSON text and dumping a result of the same size.
 *   usage: bench_mapping MAPFILE [ROWS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dwasync/alloc.h"
#include "dwasync/json.h"
#include "dwasync/mapfile.h"
#include "dwasync/mapping.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *row_text(long i)
{
    return dw_asprintf(
        "{\"dataareaid\":\"usmf\",\"customeraccount\":\"C%07ld\",\"partytype\":\"%s\","
        "\"organizationname\":\"Customer %ld\",\"personfirstname\":null,\"personlastname\":null,"
        "\"creditlimit\":%ld.5,\"creditlimitismandatory\":%ld,\"salescurrencycode\":\"USD\","
        "\"customergroupid\":\"10\",\"paymentterms\":\"Net30\",\"invoiceaccount\":null,"
        "\"onholdstatus\":%ld,\"deliveryaddressstreet\":\"%ld Main Street\","
        "\"deliveryaddresscity\":\"Seattle\",\"deliveryaddressstateid\":\"WA\","
        "\"deliveryaddresszipcode\":\"98052\",\"deliveryaddresscountryregionisocode\":\"USA\","
        "\"primarycontactemail\":\"c%ld@example.com\",\"primarycontactphone\":\"+1 555 0100\"}",
        i, i % 5 == 0 ? "Person" : "Organization", i, i % 50, i % 2, i % 6, i, i);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    long rows = argc > 2 ? strtol(argv[2], NULL, 10) : 200000;
    struct dw_buf errors;
    dw_buf_init(&errors, 0);
    struct dw_jobdef *def = NULL;
    struct dw_job_maps *maps = NULL;
    if (dw_jobdef_load_file(argv[1], &errors, &def) != DW_OK) {
        fputs(dw_buf_str(&errors), stderr);
        return 1;
    }
    dw_job_maps_from_def(def, &maps);
    char **texts = dw_calloc((size_t)rows, sizeof *texts);
    for (long i = 0; i < rows; i++)
        texts[i] = row_text(i);

    for (int run = 0; run < 3; run++) {
        struct dw_mapped_vec v = {0};
        size_t bytes = 0, ok = 0;
        double t0 = now_s();
        for (long i = 0; i < rows; i++) {
            json_t *row = json_loads(texts[i], 0, NULL);
            struct dw_source_row r = {"fno", "customersv3", DW_CHANGE_INSERT, row, NULL, NULL};
            dw_mapping_map_row(maps, &r, &v);
            for (size_t k = 0; k < v.len; k++) {
                const struct dw_text *body = v.items[k].write.body; /* written out already */
                bytes += body ? body->len : 0;
                ok += v.items[k].ok;
            }
            dw_mapped_vec_reset(&v);
            json_decref(row);
        }
        double t1 = now_s();
        size_t pbytes = 0;
        for (long i = 0; i < rows; i++) {
            json_t *row = json_loads(texts[i], 0, NULL);
            char *s = dw_json_dumps(row);
            pbytes += strlen(s);
            free(s);
            json_decref(row);
        }
        double t2 = now_s();
        printf("run %d: mapping %.0f rows/s (%zu ok, %zu bytes), parse+dump peer %.0f rows/s, "
               "ratio %.2f\n",
               run, rows / (t1 - t0), ok, bytes, rows / (t2 - t1), (t1 - t0) / (t2 - t1));
        dw_mapped_vec_cleanup(&v);
    }
    for (long i = 0; i < rows; i++)
        free(texts[i]);
    free(texts);
    dw_job_maps_free(maps);
    dw_buf_cleanup(&errors);
    return 0;
}
