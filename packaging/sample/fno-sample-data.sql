-- Sample data for the F&O staging mirror (fno-schema.sql): two legal entities, usmf and
-- demf, each with the same reference data and :customers customers (default 100): one in
-- five a person, the others organizations with one sales order of three lines each, and a
-- vendor per ten customers. That is 8.6 rows per customer over both legal entities, so
-- customers=116280 generates 1 000 000 rows.
--
--   psql -v ON_ERROR_STOP=1 -v customers=116280 -f fno-sample-data.sql
--
-- fno.sample_generate(n, first) adds customers first..first+n-1 (with their orders) to both
-- legal entities, so benchmarks can grow the data in steps.

\if :{?customers}
\else
\set customers 100
\endif

CREATE OR REPLACE FUNCTION fno.sample_generate(n integer, first integer DEFAULT 1)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    rows bigint := 0;
    added bigint;
BEGIN
    INSERT INTO fno.customersv3
        (dataareaid, customeraccount, partytype, organizationname, personfirstname,
         personlastname, creditlimit, creditlimitismandatory, salescurrencycode, customergroupid,
         paymentterms, invoiceaccount, onholdstatus, deliveryaddressstreet, deliveryaddresscity,
         deliveryaddressstateid, deliveryaddresszipcode, deliveryaddresscountryregionisocode,
         primarycontactemail, primarycontactphone)
    SELECT le.id, 'C' || lpad(i::text, 7, '0'),
           CASE WHEN i % 5 = 0 THEN 'Person' ELSE 'Organization' END,
           CASE WHEN i % 5 = 0 THEN NULL ELSE 'Customer ' || i || ' ' || upper(le.id) END,
           CASE WHEN i % 5 = 0 THEN 'First' || i END,
           CASE WHEN i % 5 = 0 THEN 'Last' || i END,
           (i % 50) * 1000.5, i % 2, le.currency,
           (ARRAY['10', '20', '30', '40'])[1 + i % 4],
           (ARRAY['Net10', 'Net30', 'COD', 'Month+15'])[1 + i % 4],
           CASE WHEN i % 7 = 0 AND i > first AND i % 5 <> 1 THEN 'C' || lpad((i - 1)::text, 7, '0') END,
           (ARRAY[0, 0, 0, 1, 2, 3, 4, 5])[1 + i % 8],
           i || ' Main Street', le.city, le.state, lpad((i % 99999)::text, 5, '0'), le.country,
           'customer' || i || '@' || le.id || '.example.com', '+1 555 ' || lpad((i % 10000)::text, 4, '0')
      FROM generate_series(first, first + n - 1) AS i,
           (VALUES ('usmf', 'USD', 'Seattle', 'WA', 'USA'),
                   ('demf', 'EUR', 'Berlin', 'BE', 'DEU')) AS le(id, currency, city, state, country);
    GET DIAGNOSTICS added = ROW_COUNT;
    rows := rows + added;

    INSERT INTO fno.vendorsv2 (dataareaid, vendoraccountnumber, vendororganizationname,
                               vendorgroupid, creditlimit, onholdstatus, currencycode)
    SELECT le.id, 'V' || lpad(i::text, 7, '0'), 'Vendor ' || i || ' ' || upper(le.id), '10',
           (i % 20) * 500, (ARRAY[0, 0, 2, 5])[1 + i % 4], le.currency
      FROM generate_series(first, first + n - 1) AS i,
           (VALUES ('usmf', 'USD'), ('demf', 'EUR')) AS le(id, currency)
     WHERE i % 10 = 0;
    GET DIAGNOSTICS added = ROW_COUNT;
    rows := rows + added;

    -- Orders only for organizations: their customer lookup is an account.
    INSERT INTO fno.salesorderheaders (dataareaid, salesordernumber, orderingcustomeraccountnumber,
                                       currencycode, salesordername, ordertotalamount,
                                       salesorderprocessingstatus)
    SELECT le.id, 'SO' || lpad(i::text, 8, '0'), 'C' || lpad(i::text, 7, '0'), le.currency,
           'Order ' || i, 3 * (10 + i % 90) * 2.5, (ARRAY[1, 1, 2, 3, 4, 0])[1 + i % 6]
      FROM generate_series(first, first + n - 1) AS i,
           (VALUES ('usmf', 'USD'), ('demf', 'EUR')) AS le(id, currency)
     WHERE i % 5 <> 0;
    GET DIAGNOSTICS added = ROW_COUNT;
    rows := rows + added;

    INSERT INTO fno.salesorderlines (dataareaid, salesordernumber, linecreationsequencenumber,
                                     productnumber, orderedsalesquantity, salesprice, lineamount)
    SELECT le.id, 'SO' || lpad(i::text, 8, '0'), l, 'P' || lpad(((i + l) % 500)::text, 5, '0'),
           2.5, 10 + i % 90, 2.5 * (10 + i % 90)
      FROM generate_series(first, first + n - 1) AS i, generate_series(1, 3) AS l,
           (VALUES ('usmf'), ('demf')) AS le(id)
     WHERE i % 5 <> 0;
    GET DIAGNOSTICS added = ROW_COUNT;
    RETURN rows + added;
END $$;

INSERT INTO fno.legalentities VALUES ('usmf', 'Contoso Entertainment System USA'),
                                     ('demf', 'Contoso Entertainment System Germany');
INSERT INTO fno.currencies VALUES ('USD', 'US Dollar', '$'), ('EUR', 'Euro', '€'),
                                  ('GBP', 'Pound sterling', '£'), ('999', 'Placeholder', '');
INSERT INTO fno.paymentterms (dataareaid, name, description, numberofdays, numberofmonths,
                              iscashpayment, paymentmethodtype)
SELECT le, t.name, t.description, t.days, t.months, t.cash, t.method
  FROM (VALUES ('usmf'), ('demf')) AS l(le),
       (VALUES ('Net10', 'Net 10 days', 10, 0, 0, 'Net'),
               ('Net30', 'Net 30 days', 30, 0, 0, 'Net'),
               ('COD', 'Cash on delivery', 0, 0, 1, 'COD'),
               ('Month+15', 'Current month + 15 days', 15, 0, 0, 'CurrentMth')) AS t(name, description, days, months, cash, method);
INSERT INTO fno.customergroups (dataareaid, customergroupid, description, issalestaxincludedinprice,
                                paymenttermid)
SELECT le, g.id, g.description, g.tax, g.terms
  FROM (VALUES ('usmf'), ('demf')) AS l(le),
       (VALUES ('10', 'Wholesale customers', 0, 'Net30'),
               ('20', 'Retail customers', 1, 'Net10'),
               ('30', 'Intercompany customers', 0, 'Net30'),
               ('40', 'Cash customers', 1, 'COD')) AS g(id, description, tax, terms);

SELECT fno.sample_generate(:customers) AS generated_rows;
