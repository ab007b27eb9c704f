#!/usr/bin/env bash
# Poison rows of every class in a 50,000-change workload, with the daemon running (issue 7's
# end-to-end test). Inserts (new customers with orders and lines), then the poison, then
# forty transactions updating every customer, three updating every order line, and deletes.
# About 1% of the rows of each kind carry a poison:
#   mapping         an on-hold status outside the value map (accounts); a street longer than
#                   the MaxLength `job start` recorded (accounts); a number outside the 32-bit
#                   range of an Integer column (payment terms): no request is sent
#   validation      a negative credit limit, which only Dataverse knows it refuses (400
#                   0x80044330)
#   missing_parent  orders of customers that never arrive (404 0x80048d02, after retries)
#   duplicate       an e-mail another account holds, unique under a second alternate key
#                   of this test's metadata (412 0x80060892)
#   privilege       deletes of order lines, a privilege the application user lacks (403
#                   0x80040220), and updates moving accounts into a business unit out of the
#                   user's reach (403 0x80048306), both dvemu rules
# Exactly those rows land in dwasync.error as open heads with the right class, code and
# message, later changes to their keys wait behind them, and everything else is applied
# (the SQL oracle, poisoned keys aside). Then the operator's fixes: the map (value map
# extended; replayed through the running daemon with dwasync.replay_errors and NOTIFY), the
# data (superseded heads skipped), the parents created, the colliding e-mails changed, the
# dvemu rules lifted, and the rest replayed by `dwasync errors replay --all` without a
# daemon. The final Dataverse state equals the staging tables, every key's write history
# moves forward in commit order, and replaying again writes nothing.
source "${DWASYNC_SOURCE_DIR:-$(dirname "$0")/../..}/tests/harness/lib.sh"
t_start=$SECONDS

# Dataverse as this test needs it: a second alternate key on accounts (their e-mail, so a
# collision is a duplicate), an on-hold option the sample's value map does not reach, and
# streets of at most 40 characters.
e2e_metadata '
account = tables["account"]
account["keys"].append({"name": "dwtest_emailkey", "attributes": ["emailaddress1"]})
attr(account, "msdyn_onholdstatus")["options"].append({"value": 806380006, "label": "Legal hold"})
attr(account, "address1_line1")["max_length"] = 40'
DW_E2E_LOG_LEVEL=warn e2e_setup
# F&O mirrors differ: this one keeps the days of a payment term in a bigint.
psql_q "ALTER TABLE fno.paymentterms ALTER numberofdays TYPE bigint" >/dev/null
e2e_load_sample
show_log_on_failure "$DW_E2E_DIR/daemon.log"
dw job start fno_sample --initial-sync >/dev/null 2>&1 || die "job start failed"
e2e_start_daemon
check_status "initial sync applied" 0 e2e_wait_applied
cnum="(substr(customeraccount, 2)::int)"   # the customer's number
onum="(substr(salesordernumber, 3)::int)"  # the order's number (its customer's)

# --- the workload -----------------------------------------------------------------------------
# 1. Inserts: 400 more customers per legal entity, their orders and lines (3,440 rows).
psql_q "SELECT fno.sample_generate(400, 1001)" >/dev/null
check_status "inserts applied" 0 e2e_wait_applied
dvemu_admin POST privileges '{"revoke": [
    {"table": "salesorderdetails", "privilege": "delete"},
    {"table": "accounts", "privilege": "write", "where": {"address1_stateorprovince": "ZZ"}}]}' >/dev/null
t0=$SECONDS

# 2. The poison (and clean deletes), one transaction per kind.
psql -X -q -v ON_ERROR_STOP=1 <<SQL
UPDATE fno.customersv3 SET onholdstatus = 6
 WHERE partytype = 'Organization' AND $cnum % 100 = 7;
UPDATE fno.customersv3 SET deliveryaddressstreet = repeat('Long street ', 5)
 WHERE partytype = 'Organization' AND $cnum % 100 = 33;
UPDATE fno.paymentterms SET numberofdays = 5000000000 WHERE name = 'Net10' AND dataareaid = 'usmf';
UPDATE fno.customersv3 SET creditlimit = -1
 WHERE partytype = 'Organization' AND $cnum % 100 = 13;
UPDATE fno.customersv3 c SET primarycontactemail = n.primarycontactemail
  FROM fno.customersv3 n
 WHERE c.partytype = 'Organization' AND (substr(c.customeraccount, 2)::int) % 100 = 21
   AND n.dataareaid = c.dataareaid
   AND n.customeraccount = 'C' || lpad(((substr(c.customeraccount, 2)::int) + 1)::text, 7, '0');
INSERT INTO fno.salesorderheaders (dataareaid, salesordernumber, orderingcustomeraccountnumber,
                                   currencycode, salesordername, ordertotalamount)
SELECT le, 'SOX' || lpad(i::text, 7, '0'), 'CX' || lpad(i::text, 6, '0'), cur, 'Lost order ' || i, 10
  FROM generate_series(1, 4) i, (VALUES ('usmf', 'USD'), ('demf', 'EUR')) l(le, cur);
INSERT INTO fno.customergroups VALUES ('usmf', '99', 'Lost group', 0, 'Net99'),
                                      ('demf', '99', 'Lost group', 0, 'Net99');
DELETE FROM fno.salesorderlines WHERE $onum % 100 = 41;
UPDATE fno.customersv3 SET deliveryaddressstateid = 'ZZ'
 WHERE partytype = 'Organization' AND $cnum % 100 = 53;
DELETE FROM fno.vendorsv2 WHERE (substr(vendoraccountnumber, 2)::int) % 100 = 50;
DELETE FROM fno.customersv3 WHERE partytype = 'Person' AND $cnum % 100 = 60;
SQL
# What the poison must give: one open head per key, with its class, status, code and the
# start of its message; "key" is the source key as the error row stores it.
psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE poison AS
SELECT 'customersv3' AS tbl, jsonb_build_object('dataareaid', dataareaid, 'customeraccount', customeraccount) AS key,
       CASE WHEN onholdstatus = 6 THEN 'mapping' WHEN creditlimit < 0 THEN 'validation'
            WHEN $cnum % 100 = 21 THEN 'duplicate' WHEN $cnum % 100 = 33 THEN 'mapping'
            ELSE 'privilege' END AS class,
       CASE WHEN onholdstatus = 6 THEN NULL WHEN creditlimit < 0 THEN 400
            WHEN $cnum % 100 = 21 THEN 412 WHEN $cnum % 100 = 33 THEN NULL ELSE 403 END AS http,
       CASE WHEN onholdstatus = 6 THEN NULL WHEN creditlimit < 0 THEN '0x80044330'
            WHEN $cnum % 100 = 21 THEN '0x80060892' WHEN $cnum % 100 = 33 THEN NULL
            ELSE '0x80048306' END AS code,
       CASE WHEN onholdstatus = 6 THEN 'map "customers_organizations": column "ONHOLDSTATUS" value 6 is not in the value map'
            WHEN creditlimit < 0 THEN 'A validation error occurred.  The value -1 of ''creditlimit'' on record of type ''account'' is outside the valid range.'
            WHEN $cnum % 100 = 21 THEN 'A record that has the attribute values ' || primarycontactemail || ' already exists. The entity key dwtest_emailkey requires'
            WHEN $cnum % 100 = 33 THEN 'map "customers_organizations": column "DELIVERYADDRESSSTREET" value "Long street Long street'
            ELSE 'Principal with ID ' END AS message
  FROM fno.customersv3
 WHERE partytype = 'Organization' AND $cnum % 100 IN (7, 13, 21, 33, 53)
UNION ALL
SELECT 'paymentterms', jsonb_build_object('dataareaid', 'usmf', 'name', 'Net10'), 'mapping', NULL, NULL,
       'map "payment_terms": column "NUMBEROFDAYS" value 5000000000 is outside the 32-bit integer range'
UNION ALL
SELECT 'salesorderheaders', jsonb_build_object('dataareaid', dataareaid, 'salesordernumber', salesordernumber),
       'missing_parent', 404, '0x80048d02', 'A record with the specified key values does not exist in account entity'
  FROM fno.salesorderheaders WHERE salesordernumber LIKE 'SOX%'
UNION ALL
SELECT 'customergroups', jsonb_build_object('dataareaid', dataareaid, 'customergroupid', customergroupid),
       'missing_parent', 404, '0x80048d02', 'A record with the specified key values does not exist in msdyn_paymentterm entity'
  FROM fno.customergroups WHERE customergroupid = '99'
UNION ALL
SELECT 'salesorderlines', jsonb_build_object('dataareaid', le, 'salesordernumber', 'SO' || lpad(i::text, 8, '0'),
                                             'linecreationsequencenumber', l),
       'privilege', 403, '0x80040220', 'Principal user (Id='
  FROM (VALUES ('usmf'), ('demf')) x(le), generate_series(1, 1400) i, generate_series(1, 3) l
 WHERE i % 100 = 41 AND (i <= 100 OR i > 1000);
SQL
check_eq "poison of each class" "duplicate:10 mapping:21 missing_parent:10 privilege:40 validation:10" \
    "$(psql_q "SELECT string_agg(class || ':' || n, ' ' ORDER BY class) FROM (SELECT class, count(*) n FROM poison GROUP BY 1) x")"

# 3. Later changes: forty transactions updating every customer (their phone, in commit
# order), three updating every order line, one every order.
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
DO $$
BEGIN
    FOR tx IN 1..40 LOOP
        UPDATE fno.customersv3 SET primarycontactphone = 'T' || lpad(tx::text, 4, '0');
        COMMIT;
    END LOOP;
    FOR tx IN 1..3 LOOP
        UPDATE fno.salesorderlines SET orderedsalesquantity = orderedsalesquantity + 1;
        COMMIT;
    END LOOP;
    UPDATE fno.salesorderheaders SET salesordername = salesordername || ' (confirmed)';
END $$;
SQL
changes=$(psql_q "SELECT n_tup_ins + n_tup_upd + n_tup_del FROM (SELECT sum(n_tup_ins) n_tup_ins, sum(n_tup_upd) n_tup_upd,
                         sum(n_tup_del) n_tup_del FROM pg_stat_user_tables WHERE schemaname = 'fno') x")
log "workload: $changes row changes in fno (sample load included)"
check_eq "a workload of more than 50,000 changes" 1 "$([ "$changes" -gt 50000 ] && echo 1)"
check_status "workload applied or parked" 0 e2e_wait_applied 300
log "workload applied or parked in $((SECONDS - t0)) s"

# --- what landed in the error table -------------------------------------------------------------
err_key="CASE e.source_table
            WHEN 'customersv3' THEN jsonb_build_object('dataareaid', r->>'dataareaid', 'customeraccount', r->>'customeraccount')
            WHEN 'customergroups' THEN jsonb_build_object('dataareaid', r->>'dataareaid', 'customergroupid', r->>'customergroupid')
            WHEN 'paymentterms' THEN jsonb_build_object('dataareaid', r->>'dataareaid', 'name', r->>'name')
            WHEN 'salesorderheaders' THEN jsonb_build_object('dataareaid', r->>'dataareaid', 'salesordernumber', r->>'salesordernumber')
            WHEN 'salesorderlines' THEN jsonb_build_object('dataareaid', r->>'dataareaid', 'salesordernumber', r->>'salesordernumber',
                                                            'linecreationsequencenumber', (r->>'linecreationsequencenumber')::int)
         END"
psql_q "CREATE VIEW err AS SELECT e.*, $err_key AS key
          FROM dwasync.error e, LATERAL (SELECT coalesce(nullif(e.source_row->'new', 'null'), e.source_row->'old') r) x" >/dev/null
psql_q "SELECT status, class, source_table, dv_code, count(*) FROM dwasync.error GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3" \
    >"$DW_E2E_DIR/errors.txt"
show_log_on_failure "$DW_E2E_DIR/errors.txt"
check_eq "exactly the poisoned keys have an open head" "$(psql_q "SELECT count(*) FROM poison")" \
    "$(psql_q "SELECT count(*) FROM err e JOIN poison p ON p.tbl = e.source_table AND p.key = e.key WHERE e.status = 'open'")"
check_eq "and nothing else is open" "$(psql_q "SELECT count(*) FROM poison")" \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'open'")"
check_eq "one head per key" 0 \
    "$(psql_q "SELECT count(*) FROM (SELECT map_id, key_text FROM dwasync.error WHERE status = 'open' GROUP BY 1, 2 HAVING count(*) > 1) x")"
# A source key is the replica identity: the primary key, or under REPLICA IDENTITY FULL
# (customers) the whole row.
check_eq "source keys of both kinds recorded" 2 \
    "$(psql_q "SELECT count(DISTINCT source_table = 'customersv3') FROM dwasync.error")"
check_eq "each source key is its row's replica identity" 0 \
    "$(psql_q "SELECT count(*) FROM err e WHERE CASE WHEN e.source_table = 'customersv3'
                 THEN e.source_key IS DISTINCT FROM coalesce(nullif(e.source_row->'new', 'null'), e.source_row->'old')
                 ELSE e.source_key IS DISTINCT FROM e.key END")"
check_eq "each head has its class, HTTP status, code and message" "" "$(psql_q "
    SELECT string_agg(e.id || ' ' || e.class || ' ' || coalesce(e.dv_code, '-') || ': ' || e.message, E'\n')
      FROM err e JOIN poison p ON p.tbl = e.source_table AND p.key = e.key
     WHERE e.status = 'open' AND NOT (e.class = p.class AND e.http_status IS NOT DISTINCT FROM p.http
           AND e.dv_code IS NOT DISTINCT FROM p.code AND starts_with(e.message, p.message))")"
check_eq "mapping errors sent no request" 0 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE class = 'mapping' AND (payload IS NOT NULL OR http_status IS NOT NULL)")"
check_eq "a string over the recorded MaxLength is a mapping error" 10 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'open' AND class = 'mapping'
                 AND message LIKE '%is longer than 40 characters, the MaxLength of \"address1_line1\" in Dataverse'")"
check_eq "requests sent are kept with the error" 0 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'open' AND class <> 'mapping' AND payload IS NULL AND operation <> 'delete'")"
# As sent: each bind written out as a path, never the reference object it was mapped to.
binds="FROM dwasync.error e, jsonb_each(e.payload) b WHERE e.status = 'open' AND b.key LIKE '%@odata.bind'"
check_contains "kept requests carry their binds" "t" "$(psql_q "SELECT count(*) > 100 $binds")"
check_eq "every bind kept as the path sent" 0 \
    "$(psql_q "SELECT count(*) $binds AND NOT (jsonb_typeof(b.value) = 'null' OR b.value #>> '{}' LIKE '/%(%)')")"
check_eq "privilege errors name the missing privilege" 30 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'open' AND class = 'privilege' AND operation = 'delete'
                 AND message LIKE '%, type=8, %is missing prvDeletesalesorderdetail privilege%on OTC=1089 for entity ''salesorderdetail''%'")"
check_eq "the business unit out of reach is an access check on the record" 10 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'open' AND class = 'privilege'
                 AND message ~ '^Principal with ID [-0-9a-f]{36} does not have WriteAccess right\(s\) for record with ID [-0-9a-f]{36} of entity account\.$'")"
# Dataverse names the parent's table; when a row has one parent reference only, dwasync
# also knows which row is missing and says so.
check_eq "missing parents name the parent's table" 8 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'open' AND class = 'missing_parent'
                 AND message LIKE '%does not exist in account entity%'")"
check_eq "and the parent row, when there is one suspect" 2 \
    "$(psql_q "SELECT count(*) FROM dwasync.error WHERE status = 'open' AND class = 'missing_parent'
                 AND missing_parent LIKE 'msdyn_paymentterms(%Net99%' AND message LIKE '%(missing parent: msdyn_paymentterms(%'")"
# Every later change of a poisoned key waits behind its head, in order: the customers'
# forty updates, the lost orders' one.
check_eq "later changes to poisoned keys wait" "$(psql_q "SELECT 40 * count(*) FILTER (WHERE tbl = 'customersv3')
                                                             + count(*) FILTER (WHERE tbl = 'salesorderheaders') FROM poison")" \
    "$(psql_q "SELECT count(*) FROM err e JOIN poison p ON p.tbl = e.source_table AND p.key = e.key WHERE e.status = 'waiting'")"
check_eq "nothing else waits" 0 "$(psql_q "SELECT count(*) FROM err e WHERE e.status = 'waiting'
    AND NOT EXISTS (SELECT 1 FROM poison p WHERE p.tbl = e.source_table AND p.key = e.key)")"
check_eq "waiting rows come after their head" 0 "$(psql_q "SELECT count(*) FROM dwasync.error w JOIN dwasync.error h
    ON h.map_id = w.map_id AND h.key_text = w.key_text AND h.status = 'open'
    WHERE w.status = 'waiting' AND (w.commit_lsn, w.position) <= (h.commit_lsn, h.position)")"

# Everything else is applied: the oracle's differences are the poisoned keys' rows only.
e2e_mismatches >/dev/null
PGOPTIONS="-c oracle.legal_entities={usmf,demf}" \
    psql_q "CREATE TABLE lost AS SELECT kind, tbl, row FROM oracle.mismatch" >/dev/null
check_eq "every row without poison is applied" "" "$(psql_q "
    SELECT string_agg(tbl || ' ' || row::text, E'\n') FROM lost l WHERE NOT EXISTS (
      SELECT 1 FROM poison p WHERE (l.tbl = 'accounts' AND p.tbl = 'customersv3'
                                    AND p.key->>'customeraccount' = l.row->>'accountnumber'
                                    AND p.key->>'dataareaid' = l.row->>'company')
                                OR (l.tbl = 'msdyn_paymentterms' AND p.tbl = 'paymentterms'
                                    AND p.key->>'name' = l.row->>'msdyn_name')
                                OR (l.tbl = 'msdyn_customergroups' AND p.tbl = 'customergroups'
                                    AND p.key->>'customergroupid' = l.row->>'msdyn_groupid')
                                OR (l.tbl = 'salesorders' AND p.tbl = 'salesorderheaders'
                                    AND p.key->>'salesordernumber' = l.row->>'msdyn_salesordernumber')
                                OR (l.tbl = 'salesorderdetails' AND p.tbl = 'salesorderlines'
                                    AND p.key->>'salesordernumber' = l.row->>'order'
                                    AND p.key->>'dataareaid' = l.row->>'company'
                                    AND (p.key->>'linecreationsequencenumber')::int = (l.row->>'sequencenumber')::int))")"
check_eq "poisoned accounts kept their version before the poison" 0 "$(psql_q "
    SELECT count(*) FROM dv.accounts a JOIN poison p ON p.tbl = 'customersv3'
        AND p.key->>'customeraccount' = a.doc->>'accountnumber'
     WHERE a.doc->>'telephone1' LIKE 'T%'")"

# --- the fixes ---------------------------------------------------------------------------------
# Mapping, by the map: on-hold status 6 gets its option (the daemon is stopped, then the job,
# to change maps). Replayed through the running daemon, from SQL.
e2e_map_onhold_6
e2e_start_daemon
check_eq "replay_errors queues the accounts' mapping errors and their followers" $((20 * 41)) \
    "$(psql_q "SELECT dwasync.replay_errors('fno_sample', 'customers_organizations', NULL, 'mapping')")"
check_status "the daemon replays them (NOTIFY)" 0 e2e_wait_replayed
check_eq "the fixed map resolved the on-hold keys" "resolved:410" \
    "$(psql_q "SELECT string_agg(status || ':' || n, ' ') FROM (SELECT e.status, count(*) n FROM err e
                 JOIN poison p ON p.tbl = e.source_table AND p.key = e.key AND p.class = 'mapping'
                WHERE e.source_table = 'customersv3' AND p.message LIKE '%ONHOLDSTATUS%' GROUP BY 1) x")"
check_eq "streets still too long failed again: open, attempted twice" "open:2:10 waiting::400" \
    "$(psql_q "SELECT string_agg(status || ':' || coalesce(a::text, '') || ':' || n, ' ' ORDER BY status) FROM (
                 SELECT e.status, CASE WHEN e.status = 'open' THEN e.attempts END a, count(*) n FROM err e
                   JOIN poison p ON p.tbl = e.source_table AND p.key = e.key AND p.class = 'mapping'
                  WHERE p.message LIKE '%DELIVERYADDRESSSTREET%' GROUP BY 1, 2) x")"

# Data: the credit limits, streets and payment term are corrected in F&O (the corrections wait
# behind the heads, whose stored rows still hold the bad values), and the superseded rows
# are skipped; the daemon replays each key's correction.
psql -X -q -v ON_ERROR_STOP=1 <<SQL
UPDATE fno.customersv3 SET creditlimit = 2500 WHERE creditlimit < 0;
UPDATE fno.customersv3 SET deliveryaddressstreet = 'Short street' WHERE length(deliveryaddressstreet) > 40;
UPDATE fno.paymentterms SET numberofdays = 10 WHERE numberofdays > 1000;
SQL
check_status "corrections parked" 0 e2e_wait_applied
superseded() {   # superseded open|waiting: ids of a key's rows before its newest, for heads of class $2
    psql_q "SELECT coalesce(string_agg(id::text, ' '), '') FROM (
        SELECT id, status, row_number() OVER (PARTITION BY map_id, key_text
                                              ORDER BY commit_lsn DESC, position DESC, part DESC) AS newest
          FROM dwasync.error
         WHERE status IN ('open', 'waiting') AND (map_id, key_text) IN
               (SELECT map_id, key_text FROM dwasync.error WHERE status = 'open' AND class IN ($2))) x
     WHERE newest > 1 AND status = '$1'"
}
waiting=$(superseded waiting "'validation', 'mapping'")
heads=$(superseded open "'validation', 'mapping'")
check_eq "heads to skip: 10 validation, 10 streets, 1 payment term" 21 "$(wc -w <<<"$heads")"
dw errors skip $waiting --reason "superseded by the correction" >/dev/null 2>&1
out=$(dw errors skip $heads --reason "corrected in F&O" 2>&1)
check_contains "skip says what it did" "skipped 21 errors" "$out"
check_status "the daemon applies the corrections" 0 e2e_wait_replayed
check_eq "corrected keys have nothing open" 0 "$(psql_q "SELECT count(*) FROM err e JOIN poison p
    ON p.tbl = e.source_table AND p.key = e.key AND p.class IN ('validation', 'mapping')
    WHERE e.status IN ('open', 'waiting', 'replaying')")"

# Duplicates: the accounts that held the e-mails get new ones. Missing parents: the
# customers arrive. Privileges: the rules are lifted. Then the rest is replayed by the CLI,
# without a daemon.
psql -X -q -v ON_ERROR_STOP=1 <<SQL
UPDATE fno.customersv3 SET primarycontactemail = 'moved-' || primarycontactemail
 WHERE partytype = 'Organization' AND $cnum % 100 = 22;
INSERT INTO fno.paymentterms (dataareaid, name, description, numberofdays)
VALUES ('usmf', 'Net99', 'Net 99 days', 99), ('demf', 'Net99', 'Net 99 days', 99);
INSERT INTO fno.customersv3 (dataareaid, customeraccount, organizationname, salescurrencycode,
                             customergroupid, paymentterms)
SELECT le, 'CX' || lpad(i::text, 6, '0'), 'Late customer ' || i, cur, '10', 'Net30'
  FROM generate_series(1, 4) i, (VALUES ('usmf', 'USD'), ('demf', 'EUR')) l(le, cur);
SQL
check_status "e-mails and parents applied" 0 e2e_wait_applied
dvemu_admin POST privileges '{"revoke": []}' >/dev/null
kill -TERM "$daemon"
wait "$daemon"
check_eq "the daemon stops cleanly" 0 $?
daemon=
out=$(dw errors replay --all --job fno_sample 2>&1)
open_left=$(psql_q "SELECT count(*) FROM dwasync.error WHERE status IN ('open', 'waiting', 'replaying')")
check_contains "the CLI replays directly" "replayed" "$out"
check_eq "nothing is left open, waiting or replaying" 0 "$open_left"
check_eq "every poisoned key ends resolved or skipped" 0 "$(psql_q "SELECT count(*) FROM poison p
    WHERE NOT EXISTS (SELECT 1 FROM err e WHERE e.source_table = p.tbl AND e.key = p.key
                        AND e.status IN ('resolved', 'skipped'))")"

# --- the end state -----------------------------------------------------------------------------------
e2e_start_daemon
check_status "the job catches up" 0 e2e_wait_applied
kill -TERM "$daemon"
wait "$daemon"
daemon=
check_eq "final Dataverse state equals the staging tables" 0 "$(e2e_mismatches)"
check_eq "every account's phone moved forward in commit order" 0 "$(e2e_history_rewinds accounts telephone1)"
# A replay applies a key's rows one by one: each replayed account saw all forty phones.
check_eq "replayed accounts got each of the forty updates" "30 40" "$(psql_q "
    SELECT count(*) || ' ' || min(n) FROM (
      SELECT p.key, count(DISTINCT h.doc->'row'->>'telephone1') FILTER (WHERE h.doc->'row'->>'telephone1' LIKE 'T%') n
        FROM poison p
        JOIN dv.cdm_companies co ON co.doc->>'cdm_companycode' = p.key->>'dataareaid'
        JOIN dv.history h ON h.doc->'row'->>'accountnumber' = p.key->>'customeraccount'
                         AND h.doc->'row'->>'_msdyn_company_value' = co.doc->>'cdm_companyid'
       WHERE p.tbl = 'customersv3' AND p.class IN ('mapping', 'duplicate', 'privilege')
         AND p.message NOT LIKE '%DELIVERYADDRESSSTREET%'
       GROUP BY 1) x")"
check_eq "every contact's phone moved forward in commit order" 0 "$(e2e_history_rewinds contacts telephone1)"
check_eq "every order line's quantity moved forward" 0 "$(e2e_history_rewinds salesorderdetails quantity numeric)"

written() { curl -sf "$DVEMU_URL/_dvemu/counters" | jq '[.rows_written[]] | add'; }
before=$(written)
out=$(dw errors replay --all --job fno_sample 2>&1)
check_contains "replaying again queues nothing" "queued 0 rows" "$out"
check_eq "replay_errors again queues nothing" 0 "$(psql_q "SELECT dwasync.replay_errors('fno_sample')")"
check_eq "replaying again writes nothing" "$before" "$(written)"
check_eq "no duplicate rows in Dataverse" 0 "$(e2e_mismatches)"
log "test ran $((SECONDS - t_start)) s"
finish
