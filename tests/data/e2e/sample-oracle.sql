-- The sample job's maps written a second time, in SQL, as the oracle of the end-to-end
-- tests: for every Dataverse table, the rows the F&O staging tables say it must hold
-- (expected) and the rows dvemu holds (actual, loaded into dv.<entity set> by dv_load),
-- both as jsonb objects of every mapped column, with lookups named by the parent's key.
-- oracle.mismatch lists each row present on one side only; empty means exact.
-- :'legal_entities' is the job's legal-entity list, e.g. '{usmf,demf}'.
DROP SCHEMA IF EXISTS oracle CASCADE;
CREATE SCHEMA oracle;

-- Parent keys by Dataverse id, for lookups.
CREATE VIEW oracle.company AS
    SELECT doc->>'cdm_companyid' AS id, doc->>'cdm_companycode' AS code FROM dv.cdm_companies;
CREATE VIEW oracle.currency AS
    SELECT doc->>'transactioncurrencyid' AS id, doc->>'isocurrencycode' AS code
      FROM dv.transactioncurrencies;
CREATE VIEW oracle.paymentterm AS
    SELECT t.doc->>'msdyn_paymenttermid' AS id, t.doc->>'msdyn_name' AS name, c.code AS company
      FROM dv.msdyn_paymentterms t LEFT JOIN oracle.company c ON c.id = t.doc->>'_msdyn_company_value';
CREATE VIEW oracle.customergroup AS
    SELECT g.doc->>'msdyn_customergroupid' AS id, g.doc->>'msdyn_groupid' AS groupid, c.code AS company
      FROM dv.msdyn_customergroups g LEFT JOIN oracle.company c ON c.id = g.doc->>'_msdyn_company_value';
CREATE VIEW oracle.account AS
    SELECT a.doc->>'accountid' AS id, a.doc->>'accountnumber' AS number, c.code AS company
      FROM dv.accounts a LEFT JOIN oracle.company c ON c.id = a.doc->>'_msdyn_company_value';
CREATE VIEW oracle.salesorder AS
    SELECT o.doc->>'salesorderid' AS id, o.doc->>'msdyn_salesordernumber' AS number, c.code AS company
      FROM dv.salesorders o LEFT JOIN oracle.company c ON c.id = o.doc->>'_msdyn_company_value';

CREATE FUNCTION oracle.le(code text) RETURNS boolean LANGUAGE sql STABLE AS
    $$ SELECT code = ANY (current_setting('oracle.legal_entities')::text[]) $$;

CREATE VIEW oracle.expected AS
    SELECT 'cdm_companies' AS tbl, jsonb_build_object('cdm_companycode', legalentityid, 'cdm_name', name) AS row
      FROM fno.legalentities WHERE oracle.le(legalentityid)
    UNION ALL
    SELECT 'transactioncurrencies', jsonb_build_object('isocurrencycode', currencycode,
           'currencyname', name, 'currencysymbol', symbol, 'exchangerate', 1)
      FROM fno.currencies WHERE currencycode <> '999'
    UNION ALL
    SELECT 'msdyn_paymentterms', jsonb_build_object('company', dataareaid, 'msdyn_name', name,
           'msdyn_description', description, 'msdyn_days', numberofdays,
           'msdyn_numberofmonth', numberofmonths, 'msdyn_iscashpayment', iscashpayment = 1,
           'msdyn_paymentmethodtype', CASE paymentmethodtype WHEN 'Net' THEN 806380991
               WHEN 'CurrentMth' THEN 806380992 WHEN 'CurrentQuart' THEN 806380993
               WHEN 'CurrentYear' THEN 806380994 WHEN 'CurrentWeek' THEN 806380995
               WHEN 'COD' THEN 806380996 WHEN 'CutOffDate' THEN 806380997 END)
      FROM fno.paymentterms WHERE oracle.le(dataareaid)
    UNION ALL
    SELECT 'msdyn_customergroups', jsonb_build_object('company', dataareaid,
           'msdyn_groupid', customergroupid, 'msdyn_description', description,
           'msdyn_issalestaxincludedinprice', issalestaxincludedinprice = 1,
           'paymentterm', paymenttermid)
      FROM fno.customergroups WHERE oracle.le(dataareaid)
    UNION ALL
    SELECT 'accounts', jsonb_build_object('company', dataareaid, 'accountnumber', customeraccount,
           'name', organizationname, 'creditlimit', creditlimit,
           'msdyn_creditlimitismandatory', creditlimitismandatory = 1,
           'currency', salescurrencycode, 'customergroup', customergroupid,
           'paymentterm', paymentterms, 'billingaccount', invoiceaccount,
           'msdyn_onholdstatus', 806380000 + onholdstatus, 'customertypecode', 3,
           'address1_line1', deliveryaddressstreet, 'address1_city', deliveryaddresscity,
           'address1_stateorprovince', deliveryaddressstateid,
           'address1_postalcode', deliveryaddresszipcode,
           'address1_country', deliveryaddresscountryregionisocode,
           'emailaddress1', primarycontactemail, 'telephone1', primarycontactphone)
      FROM fno.customersv3 WHERE oracle.le(dataareaid) AND partytype = 'Organization'
    UNION ALL
    SELECT 'contacts', jsonb_build_object('company', dataareaid,
           'msdyn_contactpersonid', customeraccount, 'firstname', personfirstname,
           'lastname', personlastname, 'emailaddress1', primarycontactemail,
           'telephone1', primarycontactphone)
      FROM fno.customersv3 WHERE oracle.le(dataareaid) AND partytype = 'Person'
    UNION ALL
    SELECT 'msdyn_vendors', jsonb_build_object('company', dataareaid,
           'msdyn_vendoraccountnumber', vendoraccountnumber, 'msdyn_name', vendororganizationname,
           'msdyn_vendorcreditlimit', creditlimit, 'msdyn_onholdstatus', 806380000 + onholdstatus,
           'currency', currencycode)
      FROM fno.vendorsv2 WHERE oracle.le(dataareaid)
    UNION ALL
    SELECT 'salesorders', jsonb_build_object('company', dataareaid,
           'msdyn_salesordernumber', salesordernumber, 'customer', orderingcustomeraccountnumber,
           'currency', currencycode, 'msdyn_ordertype', 192350000, 'name', salesordername,
           'totalamount', ordertotalamount,
           'msdyn_processingstatus', CASE salesorderprocessingstatus WHEN 0 THEN 192350000
               WHEN 1 THEN 192350000 WHEN 2 THEN 192350004 WHEN 3 THEN 192350005
               WHEN 4 THEN 192350007 END)
      FROM fno.salesorderheaders WHERE oracle.le(dataareaid)
    UNION ALL
    SELECT 'salesorderdetails', jsonb_build_object('company', dataareaid,
           'order', salesordernumber, 'sequencenumber', linecreationsequencenumber,
           'productdescription', productnumber, 'isproductoverridden', true,
           'quantity', orderedsalesquantity, 'priceperunit', salesprice,
           'ispriceoverridden', true, 'extendedamount', lineamount)
      FROM fno.salesorderlines WHERE oracle.le(dataareaid);

CREATE VIEW oracle.actual AS
    SELECT 'cdm_companies' AS tbl, jsonb_build_object('cdm_companycode', doc->'cdm_companycode',
           'cdm_name', doc->'cdm_name') AS row
      FROM dv.cdm_companies
    UNION ALL
    SELECT 'transactioncurrencies', jsonb_build_object('isocurrencycode', doc->'isocurrencycode',
           'currencyname', doc->'currencyname', 'currencysymbol', doc->'currencysymbol',
           'exchangerate', doc->'exchangerate')
      FROM dv.transactioncurrencies
    UNION ALL
    SELECT 'msdyn_paymentterms', jsonb_build_object('company', c.code, 'msdyn_name', d->'msdyn_name',
           'msdyn_description', d->'msdyn_description', 'msdyn_days', d->'msdyn_days',
           'msdyn_numberofmonth', d->'msdyn_numberofmonth',
           'msdyn_iscashpayment', d->'msdyn_iscashpayment',
           'msdyn_paymentmethodtype', d->'msdyn_paymentmethodtype')
      FROM (SELECT doc AS d FROM dv.msdyn_paymentterms) t
      LEFT JOIN oracle.company c ON c.id = d->>'_msdyn_company_value'
    UNION ALL
    SELECT 'msdyn_customergroups', jsonb_build_object('company', c.code,
           'msdyn_groupid', d->'msdyn_groupid', 'msdyn_description', d->'msdyn_description',
           'msdyn_issalestaxincludedinprice', d->'msdyn_issalestaxincludedinprice',
           'paymentterm', p.name)
      FROM (SELECT doc AS d FROM dv.msdyn_customergroups) g
      LEFT JOIN oracle.company c ON c.id = d->>'_msdyn_company_value'
      LEFT JOIN oracle.paymentterm p ON p.id = d->>'_msdyn_paymenttermid_value'
    UNION ALL
    SELECT 'accounts', jsonb_build_object('company', c.code, 'accountnumber', d->'accountnumber',
           'name', d->'name', 'creditlimit', d->'creditlimit',
           'msdyn_creditlimitismandatory', d->'msdyn_creditlimitismandatory',
           'currency', cur.code, 'customergroup', g.groupid, 'paymentterm', p.name,
           'billingaccount', b.number, 'msdyn_onholdstatus', d->'msdyn_onholdstatus',
           'customertypecode', d->'customertypecode', 'address1_line1', d->'address1_line1',
           'address1_city', d->'address1_city',
           'address1_stateorprovince', d->'address1_stateorprovince',
           'address1_postalcode', d->'address1_postalcode',
           'address1_country', d->'address1_country', 'emailaddress1', d->'emailaddress1',
           'telephone1', d->'telephone1')
      FROM (SELECT doc AS d FROM dv.accounts) a
      LEFT JOIN oracle.company c ON c.id = d->>'_msdyn_company_value'
      LEFT JOIN oracle.currency cur ON cur.id = d->>'_transactioncurrencyid_value'
      LEFT JOIN oracle.customergroup g ON g.id = d->>'_msdyn_customergroupid_value'
      LEFT JOIN oracle.paymentterm p ON p.id = d->>'_msdyn_paymentterm_value'
      LEFT JOIN oracle.account b ON b.id = d->>'_msdyn_billingaccount_value'
    UNION ALL
    SELECT 'contacts', jsonb_build_object('company', c.code,
           'msdyn_contactpersonid', d->'msdyn_contactpersonid', 'firstname', d->'firstname',
           'lastname', d->'lastname', 'emailaddress1', d->'emailaddress1',
           'telephone1', d->'telephone1')
      FROM (SELECT doc AS d FROM dv.contacts) ct
      LEFT JOIN oracle.company c ON c.id = d->>'_msdyn_company_value'
    UNION ALL
    SELECT 'msdyn_vendors', jsonb_build_object('company', c.code,
           'msdyn_vendoraccountnumber', d->'msdyn_vendoraccountnumber', 'msdyn_name', d->'msdyn_name',
           'msdyn_vendorcreditlimit', d->'msdyn_vendorcreditlimit',
           'msdyn_onholdstatus', d->'msdyn_onholdstatus', 'currency', cur.code)
      FROM (SELECT doc AS d FROM dv.msdyn_vendors) v
      LEFT JOIN oracle.company c ON c.id = d->>'_msdyn_company_value'
      LEFT JOIN oracle.currency cur ON cur.id = d->>'_msdyn_currencycode_value'
    UNION ALL
    SELECT 'salesorders', jsonb_build_object('company', c.code,
           'msdyn_salesordernumber', d->'msdyn_salesordernumber', 'customer', acc.number,
           'currency', cur.code, 'msdyn_ordertype', d->'msdyn_ordertype', 'name', d->'name',
           'totalamount', d->'totalamount', 'msdyn_processingstatus', d->'msdyn_processingstatus')
      FROM (SELECT doc AS d FROM dv.salesorders) o
      LEFT JOIN oracle.company c ON c.id = d->>'_msdyn_company_value'
      LEFT JOIN oracle.account acc ON acc.id = d->>'_customerid_value'
      LEFT JOIN oracle.currency cur ON cur.id = d->>'_transactioncurrencyid_value'
    UNION ALL
    SELECT 'salesorderdetails', jsonb_build_object('company', so.company, 'order', so.number,
           'sequencenumber', d->'sequencenumber', 'productdescription', d->'productdescription',
           'isproductoverridden', d->'isproductoverridden', 'quantity', d->'quantity',
           'priceperunit', d->'priceperunit', 'ispriceoverridden', d->'ispriceoverridden',
           'extendedamount', d->'extendedamount')
      FROM (SELECT doc AS d FROM dv.salesorderdetails) l
      LEFT JOIN oracle.salesorder so ON so.id = d->>'_salesorderid_value';

-- jsonb null and absent keys differ; the maps send null, so both sides carry every key.
CREATE VIEW oracle.mismatch AS
    (SELECT 'missing' AS kind, tbl, row FROM oracle.expected
     EXCEPT ALL SELECT 'missing', tbl, row FROM oracle.actual)
    UNION ALL
    (SELECT 'unexpected', tbl, row FROM oracle.actual
     EXCEPT ALL SELECT 'unexpected', tbl, row FROM oracle.expected);
