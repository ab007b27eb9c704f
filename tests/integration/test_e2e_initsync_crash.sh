#!/usr/bin/env bash
# An interrupted initial sync leaves no ghost rows. The sync copies in chunks of 25 rows,
# interleaved with the stream; the daemon is killed (failpoint, as kill -9) inside the
# customers table, after a chunk was applied and before its progress was recorded. Then the
# source changes while nobody applies: persons already in Dataverse are deleted, others move
# out of the persons' filter (person -> organisation), the last person is deleted, some
# customers are updated. The restarted daemon resumes at the next chunk on the same slot
# (taken by job start, never dropped or created again): Dataverse ends equal to the oracle,
# no error rows, and no account's history goes back more than once (the one crash).
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
sed -i 's/^\[source\]$/[source]\nsnapshot_fetch_rows = 25/' "$DW_E2E_CONF"
started=$(dw job start fno_sample --initial-sync 2>&1) || die "job start failed: $started"

# Chunks: legal entities, currencies, payment terms, customer groups, then customers (200
# rows, 8 chunks): the 7th recorded chunk is the customers' third.
DWASYNC_FAILPOINTS=initial_sync_chunk_applied_before_progress:crash@7 e2e_start_daemon
wait "$daemon"
check_eq "the daemon died at the failpoint (SIGKILL)" 137 $?
daemon=
check_contains "the failpoint fired" 'failpoint "initial_sync_chunk_applied_before_progress" fired' \
    "$(cat "$DW_E2E_DIR/daemon.log")"
slot=$(psql_q "SELECT slot_name FROM pg_replication_slots")
check_eq "the job's slot exists" dwasync_fno_sample "$slot"
check_eq "the sync is recorded as running" running \
    "$(psql_q "SELECT initial_sync FROM dwasync.job WHERE name = 'fno_sample'")"
copied=$(e2e_rows contacts)
check_eq "some customers were copied before the crash (got $copied persons)" 1 \
    "$([ "$copied" -gt 6 ] && echo 1)"
# Persons (contacts; they have no orders and invoice for nobody) already in Dataverse: four
# are deleted, three move out of the persons' filter into the organisations' map. These are
# the ghosts an old-style restart (new slot, fresh copy) leaves behind. The last person,
# not copied yet, is deleted too; the first 30 customers get a new credit limit.
persons=$(curl -sf "$DVEMU_URL/_dvemu/tables/contacts" | jq -r '[.value[].msdyn_contactpersonid] | unique | .[0:7] | join(",")')
gone=$(cut -d, -f1-4 <<<"$persons") moved=$(cut -d, -f5-7 <<<"$persons")
psql_q "DELETE FROM fno.customersv3 WHERE customeraccount = ANY (string_to_array('$gone', ','));
        UPDATE fno.customersv3 SET partytype = 'Organization', organizationname = 'Moved ' || customeraccount
          WHERE customeraccount = ANY (string_to_array('$moved', ','));
        DELETE FROM fno.customersv3 WHERE (dataareaid, customeraccount) =
          (SELECT dataareaid, customeraccount FROM fno.customersv3 WHERE partytype = 'Person'
            ORDER BY dataareaid DESC, customeraccount DESC LIMIT 1);
        UPDATE fno.customersv3 SET creditlimit = creditlimit + 1
          WHERE customeraccount IN (SELECT customeraccount FROM fno.customersv3
                                     ORDER BY dataareaid, customeraccount LIMIT 30)" >/dev/null ||
    die "changing the source failed"

e2e_start_daemon
check_status "the sync resumed and finished" 0 e2e_wait_synced
check_contains "it resumed, not restarted" "initial sync resumes" "$(cat "$DW_E2E_DIR/daemon.log")"
check_contains "job start created the slot" 'created replication slot "dwasync_fno_sample"' "$started"
check_eq "the daemon never created or dropped one" 0 \
    "$(grep -c 'created replication slot' "$DW_E2E_DIR/daemon.log")"
check_eq "the same slot" "$slot" "$(psql_q "SELECT string_agg(slot_name, ',') FROM pg_replication_slots")"
check_eq "the sync is recorded as done" done \
    "$(psql_q "SELECT initial_sync FROM dwasync.job WHERE name = 'fno_sample'")"
check_eq "every table's copy is done" 0 "$(psql_q "SELECT count(*) FROM dwasync.copy_request WHERE NOT done")"
check_eq "Dataverse equals the source: no ghost rows" 0 "$(e2e_mismatches)"
check_eq "no deleted or moved person is left" 0 "$(curl -sf "$DVEMU_URL/_dvemu/tables/contacts" |
    jq --arg g "$persons" '[.value[] | select(.msdyn_contactpersonid as $a | $g | split(",") | index($a))] | length')"
check_eq "the moved persons are organisations now" 3 "$(curl -sf "$DVEMU_URL/_dvemu/tables/accounts" |
    jq --arg g "$moved" '[.value[] | select(.accountnumber as $a | $g | split(",") | index($a)) | .accountnumber] | unique | length')"
check_eq "no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
rewinds=$(e2e_history_rewinds accounts creditlimit numeric)
check_eq "the history is complete" 0 $?
check_eq "no account went back more than once (one crash; got $rewinds)" 1 "$([ "$rewinds" -le 1 ] && echo 1)"
kill -TERM "$daemon"; wait "$daemon"
check_eq "the daemon stops cleanly" 0 $?

# A crash between a checkpoint and the slot's confirmation: the change is redelivered and
# applied again, harmlessly.
DWASYNC_FAILPOINTS=checkpoint_before_slot_confirm:crash e2e_start_daemon
psql_q "UPDATE fno.customersv3 SET creditlimit = creditlimit + 1000" >/dev/null
wait "$daemon"
check_eq "the daemon died between checkpoint and slot confirmation" 137 $?
e2e_start_daemon
check_status "the redelivered change is applied" 0 e2e_wait_applied
check_eq "Dataverse still equals the source" 0 "$(e2e_mismatches)"
check_eq "still no error rows" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
kill -TERM "$daemon"; wait "$daemon"
daemon=

# A new initial sync into the populated Dataverse (as `job start --initial-sync` after a drop
# does), stopped after its first chunk. Meanwhile the source deletes an order with its lines
# and a person, and moves a person out of the persons' filter: all in tables the copy has not
# reached when the restarted daemon streams these changes. The copy never sees those rows;
# their deletes must still reach Dataverse, which holds them from the first sync.
dw job stop fno_sample >/dev/null 2>&1
psql_q "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots" >/dev/null
started=$(dw job start fno_sample --initial-sync 2>&1) || die "the second job start failed: $started"
check_contains "job start took the new slot" 'created replication slot "dwasync_fno_sample"' "$started"
# An order deleted once the job has started, before any daemon runs: its delete reaches
# Dataverse through the slot job start took (a daemon's own slot would come too late).
early=$(psql_q "SELECT max(salesordernumber) FROM fno.salesorderlines")
psql_q "BEGIN;
        DELETE FROM fno.salesorderlines WHERE salesordernumber = '$early';
        DELETE FROM fno.salesorderheaders WHERE salesordernumber = '$early';
        COMMIT" >/dev/null || die "deleting order $early failed"
DWASYNC_FAILPOINTS=initial_sync_chunk_applied_before_progress:crash e2e_start_daemon
wait "$daemon"
check_eq "the second sync died after its first chunk (SIGKILL)" 137 $?
daemon=
read -r order person moved <<<"$(psql_q "SELECT (SELECT salesordernumber FROM fno.salesorderlines
        ORDER BY salesordernumber LIMIT 1),
    (SELECT string_agg(customeraccount, ' ' ORDER BY customeraccount) FROM (SELECT customeraccount
        FROM fno.customersv3 WHERE partytype = 'Person' ORDER BY customeraccount LIMIT 2) p)" | tr '|' ' ')"
[ -n "$moved" ] || die "no order with lines or no two persons in the sample"
psql_q "BEGIN;
        DELETE FROM fno.salesorderlines WHERE salesordernumber = '$order';
        DELETE FROM fno.salesorderheaders WHERE salesordernumber = '$order';
        DELETE FROM fno.customersv3 WHERE customeraccount = '$person';
        UPDATE fno.customersv3 SET partytype = 'Organization', organizationname = 'Moved ' || customeraccount
          WHERE customeraccount = '$moved';
        COMMIT" >/dev/null || die "changing the source failed"
e2e_start_daemon
check_status "the second sync finished" 0 e2e_wait_synced
check_eq "Dataverse equals the source after the second sync: no ghost rows" 0 "$(e2e_mismatches)"
check_eq "the order deleted before the daemon ran is gone from Dataverse" 0 \
    "$(curl -sf "$DVEMU_URL/_dvemu/tables/salesorders" |
        jq --arg o "$early" '[.value[] | select(.msdyn_salesordernumber == $o)] | length')"
check_eq "the daemon created no slot of its own" 0 "$(grep -c 'created replication slot' "$DW_E2E_DIR/daemon.log")"
check_eq "still no error rows after the second sync" 0 "$(psql_q "SELECT count(*) FROM dwasync.error")"
kill -TERM "$daemon"; wait "$daemon"
daemon=
finish
