/*
 * The recovery probe: after a request goes unanswered or draws 5xx the sink is in an outage,
 * and besides the requests' own exponential backoff a GET WhoAmI asks on a capped interval
 * whether Dataverse answers again. The first answer (the probe's or any request's) ends the
 * outage and sends every request that was backing off at once, so that recovery is noticed
 * within seconds rather than after the longest backoff (test_sink_probe.sh).
 */
#include "internal.h"

#include "dwasync/clock.h"
#include "dwasync/log.h"

/* The recovery probe's interval: from PROBE_BASE_MS, doubling, never above PROBE_MAX_MS. With
 * [dataverse] retry_max_backoff_ms at or below PROBE_MAX_MS the requests' own retries come as
 * often, and no probe is sent. */
#define PROBE_BASE_MS 500
#define PROBE_MAX_MS  2000

/* When to probe next, after probes_failed probes went unanswered. */
static int64_t probe_delay_ms(const struct dw_sink *s)
{
    return dw_backoff_ms(s->probes_failed + 1, PROBE_BASE_MS, PROBE_MAX_MS, dw_sink_random32());
}

/* A request failed for want of an answer (or with 5xx): from now on, probe. */
void dw_sink_outage_begin(struct dw_sink *s, int64_t now)
{
    if (s->outage || s->cfg->dataverse.retry_max_backoff_ms <= PROBE_MAX_MS)
        return;
    s->outage = true;
    s->probes_failed = 0;
    s->probe_at = now + probe_delay_ms(s);
    DW_WARN("Dataverse does not answer: asking WhoAmI at most every %d ms until it does",
            PROBE_MAX_MS);
}

/* Dataverse answered: the requests backing off meanwhile go at once. */
void dw_sink_outage_end(struct dw_sink *s, int64_t now)
{
    if (!s->outage)
        return;
    s->outage = false;
    size_t released = 0;
    struct req *q;
    DL_FOREACH(s->queue, q)
    {
        if (q->not_before > now) {
            q->not_before = now;
            released++;
        }
    }
    DW_INFO("Dataverse answers again: resuming %zu waiting request%s at once", released,
            released == 1 ? "" : "s");
}

/* Whether an answer shows Dataverse is there: anything but no answer, 5xx or 429. */
bool dw_sink_answered(CURLcode cc, long http)
{
    return cc == CURLE_OK && http > 0 && http < 500 && http != 429;
}

/* Whether a probe can go now: an outage, requests waiting for its end, a free slot. */
bool dw_sink_probe_due(const struct dw_sink *s, int64_t now, int limit)
{
    return s->outage && !s->probe_in_flight && s->queue && now >= s->probe_at &&
           s->in_flight < limit;
}

void dw_sink_start_probe(struct dw_sink *s, const char *token, int64_t now)
{
    struct req *q = dw_sink_req_new(REQ_PROBE, "GET", dw_sink_api_url(s, "WhoAmI"));
    if (dw_sink_start_transfer(s, q, token) != DW_OK) {
        dw_sink_req_free(q);
        s->probe_at = now + probe_delay_ms(s);
        return;
    }
    s->probe_in_flight = true;
    s->stats.probes++;
}

void dw_sink_complete_probe(struct dw_sink *s, struct req *q, CURLcode cc, long http)
{
    int64_t now = dw_clock_ms();
    s->probe_in_flight = false;
    if (dw_sink_answered(cc, http)) {
        dw_sink_outage_end(s, now);
    } else {
        s->probes_failed++;
        s->probe_at = now + probe_delay_ms(s);
        DW_DEBUG("probe %d: Dataverse still does not answer (HTTP %ld)", s->probes_failed, http);
    }
    dw_sink_req_free(q);
}
