#!/usr/bin/env bash
# End to end on the sample job: initial sync, then live inserts, updates and deletes across
# every table; the final Dataverse state equals the staging tables (every mapped column of
# every row, through the SQL oracle); parents land before children and deletes go children
# first (dvemu's write history); a legal entity outside the job's list never arrives; a
# customer leaving a map's filter is deleted from that table; pause holds changes back and
# resume applies them; SIGTERM stops cleanly.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
e2e_setup
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/run1.log" "$DW_E2E_DIR/run2.log" "$DW_E2E_DIR/run3.log"

out=$(dw job start fno_sample --initial-sync 2>&1)
check_status "job start --initial-sync" 0 test $? -eq 0
timeout 300 "$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample --until-caught-up \
    >"$DW_E2E_DIR/run1.log" 2>&1
check_eq "initial sync run exits 0" 0 $?
check_eq "initial sync: Dataverse equals the staging tables" 0 "$(e2e_mismatches)"
check_eq "initial sync: no error rows" 0 "$(psql_q 'select count(*) from dwasync.error')"
check_eq "initial sync: 160 accounts" 160 "$(e2e_rows accounts)"

# A burst of live changes, in several transactions touching several tables.
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
BEGIN;  -- new customers with orders and lines (parents and children in one transaction)
SELECT fno.sample_generate(20, 101);
COMMIT;
-- updates of every kind of column, lookups included
UPDATE fno.customersv3 SET organizationname = organizationname || ' (renamed)',
       creditlimit = creditlimit + 0.25, onholdstatus = (onholdstatus + 1) % 6,
       customergroupid = '20', paymentterms = 'Net10'
 WHERE customeraccount BETWEEN 'C0000001' AND 'C0000030' AND partytype = 'Organization';
UPDATE fno.currencies SET symbol = 'US$' WHERE currencycode = 'USD';
UPDATE fno.paymentterms SET description = 'Net 30 days, revised', numberofdays = 31
 WHERE name = 'Net30';
-- an organization becomes a person: it leaves the accounts map and enters the contacts map
-- (its order moves to another customer first, so no order refers to a missing account)
UPDATE fno.salesorderheaders SET orderingcustomeraccountnumber = 'C0000001'
 WHERE salesordernumber = 'SO00000002';
UPDATE fno.customersv3 SET partytype = 'Person', personfirstname = 'Ada',
       personlastname = 'Lovelace', organizationname = NULL
 WHERE customeraccount = 'C0000002';
-- deletes: an order with its lines, then a customer whose orders are gone
BEGIN;
DELETE FROM fno.salesorderlines WHERE salesordernumber = 'SO00000003';
DELETE FROM fno.salesorderheaders WHERE salesordernumber = 'SO00000003';
COMMIT;
DELETE FROM fno.salesorderlines WHERE salesordernumber = 'SO00000004' AND dataareaid = 'usmf';
DELETE FROM fno.salesorderheaders WHERE salesordernumber = 'SO00000004' AND dataareaid = 'usmf';
DELETE FROM fno.customersv3 WHERE customeraccount = 'C0000004' AND dataareaid = 'usmf';
-- a legal entity outside the job's list: none of it may reach Dataverse
INSERT INTO fno.legalentities VALUES ('gbsi', 'Contoso UK');
INSERT INTO fno.customersv3 (dataareaid, customeraccount, organizationname, salescurrencycode)
VALUES ('gbsi', 'C9000001', 'UK only', 'GBP');
-- a placeholder currency excluded by the currencies map's filter
UPDATE fno.currencies SET name = 'Placeholder (edited)' WHERE currencycode = '999';
SQL
timeout 300 "$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample --until-caught-up \
    >"$DW_E2E_DIR/run2.log" 2>&1
check_eq "live changes run exits 0" 0 $?
check_eq "live changes: Dataverse equals the staging tables" 0 "$(e2e_mismatches)"
check_eq "live changes: no error rows" 0 "$(psql_q 'select count(*) from dwasync.error')"
check_eq "excluded legal entity never arrives" 0 \
    "$(psql_q "select count(*) from dv.cdm_companies where doc->>'cdm_companycode' = 'gbsi'")"
check_eq "excluded legal entity's customer never arrives" 0 \
    "$(psql_q "select count(*) from dv.accounts where doc->>'accountnumber' = 'C9000001'")"
check_eq "row leaving the accounts filter is deleted from accounts" 0 \
    "$(psql_q "select count(*) from dv.accounts where doc->>'accountnumber' = 'C0000002'")"
check_eq "and arrives in contacts" 2 \
    "$(psql_q "select count(*) from dv.contacts where doc->>'msdyn_contactpersonid' = 'C0000002'")"

# Order of writes, from dvemu's history: every row's first write comes after the first
# write of the parents it refers to; deletes of lines come before deletes of their order.
psql_q "DROP TABLE IF EXISTS dv.history; CREATE TABLE dv.history (doc jsonb)"
curl -sf "$DVEMU_URL/_dvemu/history" | psql -X -qAt -v ON_ERROR_STOP=1 -c "CREATE TEMP TABLE raw (t text); \
    COPY raw FROM STDIN WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02'); \
    INSERT INTO dv.history SELECT jsonb_array_elements(t::jsonb->'value') FROM raw"
check_eq "history is complete" 0 "$(curl -sf "$DVEMU_URL/_dvemu/history" | python3 -c 'import json,sys; print(json.load(sys.stdin)["dropped"])')"
children_first=$(psql_q "
    WITH h AS (SELECT (doc->>'seq')::bigint seq, doc->>'table' tbl, doc->>'id' id, doc->>'op' op,
                      doc->'row' r FROM dv.history),
         first_write AS (SELECT tbl, id, min(seq) seq FROM h WHERE op <> 'delete' GROUP BY 1, 2),
         refs AS (SELECT h.tbl, h.id, h.seq, kv.value #>> '{}' parent
                    FROM h, jsonb_each(h.r) kv
                   WHERE h.op <> 'delete' AND kv.key LIKE '\_%\_value' AND jsonb_typeof(kv.value) = 'string')
    SELECT count(*) FROM refs r JOIN first_write p ON p.id = r.parent
     WHERE p.seq > (SELECT min(seq) FROM h WHERE h.tbl = r.tbl AND h.id = r.id AND h.op <> 'delete')")
check_eq "no row was written before a parent it refers to" 0 "$children_first"
check_eq "the history saw parents referenced at all" 1 "$(psql_q "
    SELECT (count(*) > 100)::int FROM dv.history h, jsonb_each(h.doc->'row') kv
     WHERE kv.key = '_salesorderid_value'")"
deletes=$(psql_q "
    WITH h AS (SELECT (doc->>'seq')::bigint seq, doc->>'table' tbl, doc->>'id' id, doc->>'op' op,
                      doc->'row' r FROM dv.history)
    SELECT count(*) || ':' || count(*) FILTER (WHERE l.seq > o.seq)
      FROM h o JOIN h l ON l.tbl = 'salesorderdetails' AND l.op = 'delete'
       AND l.r->>'_salesorderid_value' = o.id
     WHERE o.tbl = 'salesorders' AND o.op = 'delete'")
check_eq "order lines deleted before their orders (9 lines, none after)" "9:0" "$deletes"

# Pause holds changes back (the slot keeps them); resume applies them.
"$DWASYNC_BIN" --config "$DW_E2E_CONF" run --job fno_sample >"$DW_E2E_DIR/run3.log" 2>&1 &
daemon=$!
on_exit "kill -9 $daemon"
dw job pause fno_sample >/dev/null
held() { grep -qE 'job is paused: applying what was received|job is not active: waiting' "$DW_E2E_DIR/run3.log"; }
check_status "the daemon sees the pause" 0 wait_for 60 held   # it reads the job's state every 2 s
psql_q "UPDATE fno.customersv3 SET organizationname = 'Paused Inc' WHERE customeraccount = 'C0000006' AND dataareaid = 'usmf'"
sleep 3
check_eq "paused: change held back" 0 "$(curl -sf "$DVEMU_URL/_dvemu/tables/accounts" | grep -c 'Paused Inc')"
dw job resume fno_sample >/dev/null
for _ in $(seq 1 60); do
    [ "$(curl -sf "$DVEMU_URL/_dvemu/tables/accounts" | grep -c 'Paused Inc')" = 1 ] && break
    sleep 0.5
done
check_eq "resumed: change applied" 1 "$(curl -sf "$DVEMU_URL/_dvemu/tables/accounts" | grep -c 'Paused Inc')"
kill -TERM $daemon
wait $daemon
check_eq "SIGTERM: daemon exits 0" 0 $?
check_eq "final state still exact" 0 "$(e2e_mismatches)"
check_eq "slot confirmed up to the last commit" 1 "$(psql_q "
    SELECT (confirmed_flush_lsn >= (SELECT confirmed_lsn FROM dwasync.checkpoint))::int
      FROM pg_replication_slots WHERE slot_name = 'dwasync_fno_sample'")"

finish
