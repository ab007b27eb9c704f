-- A Dynamics 365 Finance & Operations staging mirror in miniature: the data entities of the
-- dwasync sample job (packaging/sample/fno-sample.map.json), with F&O-like column names and
-- types: strings as varchar(n) of the F&O extended data types, reals as numeric(32,6),
-- enums as int (NoYes: No = 0, Yes = 1) or, as some mirrors export them, as enum names;
-- dataareaid (lower case) is part of the key of every company-specific table.
--
--   psql -v ON_ERROR_STOP=1 -f fno-schema.sql && psql -f fno-sample-data.sql

CREATE SCHEMA IF NOT EXISTS fno;

-- Legal entities (LegalEntity): cdm_companies.
CREATE TABLE fno.legalentities (
    legalentityid varchar(4) PRIMARY KEY,
    name          varchar(60) NOT NULL
);

-- Currencies (Currency): transactioncurrencies, shared by every legal entity.
CREATE TABLE fno.currencies (
    currencycode varchar(3) PRIMARY KEY,
    name         varchar(60) NOT NULL,
    symbol       varchar(5) NOT NULL DEFAULT ''
);

-- Terms of payment (PaymentTerm): msdyn_paymentterms.
-- paymentmethodtype holds the NetDays enum by name (Net, CurrentMth, ... COD, CutOffDate).
CREATE TABLE fno.paymentterms (
    dataareaid        varchar(4) NOT NULL,
    name              varchar(10) NOT NULL,
    description       varchar(60) NOT NULL DEFAULT '',
    numberofdays      integer NOT NULL DEFAULT 0,
    numberofmonths    integer NOT NULL DEFAULT 0,
    iscashpayment     integer NOT NULL DEFAULT 0 CHECK (iscashpayment IN (0, 1)),
    paymentmethodtype varchar(20) NOT NULL DEFAULT 'Net',
    PRIMARY KEY (dataareaid, name)
);

-- Customer groups (CustomerGroup): msdyn_customergroups.
CREATE TABLE fno.customergroups (
    dataareaid                varchar(4) NOT NULL,
    customergroupid           varchar(10) NOT NULL,
    description               varchar(60) NOT NULL DEFAULT '',
    issalestaxincludedinprice integer NOT NULL DEFAULT 0 CHECK (issalestaxincludedinprice IN (0, 1)),
    paymenttermid             varchar(10),
    PRIMARY KEY (dataareaid, customergroupid)
);

-- Customers V3 (CustCustomerV3Entity): organizations to accounts, persons to contacts.
-- onholdstatus is CustVendorBlocked: No 0, Invoice 1, All 2, Payment 3, Requisition 4,
-- Never 5. Two maps read this table with filters on partytype, which is not a key column:
-- PostgreSQL then needs the whole old row in WAL (REPLICA IDENTITY FULL) to publish
-- UPDATE and DELETE, and dwasync needs it to see a row leave a filter.
CREATE TABLE fno.customersv3 (
    dataareaid                         varchar(4) NOT NULL,
    customeraccount                    varchar(20) NOT NULL,
    partytype                          varchar(20) NOT NULL DEFAULT 'Organization',
    organizationname                   varchar(100),
    personfirstname                    varchar(25),
    personlastname                     varchar(25),
    creditlimit                        numeric(32, 6) NOT NULL DEFAULT 0,
    creditlimitismandatory             integer NOT NULL DEFAULT 0,
    salescurrencycode                  varchar(3),
    customergroupid                    varchar(10),
    paymentterms                       varchar(10),
    invoiceaccount                     varchar(20),
    onholdstatus                       integer NOT NULL DEFAULT 0,
    deliveryaddressstreet              varchar(250),
    deliveryaddresscity                varchar(60),
    deliveryaddressstateid             varchar(10),
    deliveryaddresszipcode             varchar(10),
    deliveryaddresscountryregionisocode varchar(10),
    primarycontactemail                varchar(80),
    primarycontactphone                varchar(50),
    PRIMARY KEY (dataareaid, customeraccount)
);
ALTER TABLE fno.customersv3 REPLICA IDENTITY FULL;

-- Vendors V2 (VendVendorV2Entity): msdyn_vendors.
CREATE TABLE fno.vendorsv2 (
    dataareaid             varchar(4) NOT NULL,
    vendoraccountnumber    varchar(20) NOT NULL,
    vendororganizationname varchar(100),
    vendorgroupid          varchar(10),
    creditlimit            numeric(32, 6) NOT NULL DEFAULT 0,
    onholdstatus           integer NOT NULL DEFAULT 0,
    currencycode           varchar(3),
    PRIMARY KEY (dataareaid, vendoraccountnumber)
);

-- Sales order headers V2 (SalesOrderHeaderV2Entity): salesorders.
-- salesorderprocessingstatus is SalesStatus: None 0, Backorder 1, Delivered 2, Invoiced 3,
-- Canceled 4.
CREATE TABLE fno.salesorderheaders (
    dataareaid                    varchar(4) NOT NULL,
    salesordernumber              varchar(20) NOT NULL,
    orderingcustomeraccountnumber varchar(20) NOT NULL,
    currencycode                  varchar(3) NOT NULL,
    salesordername                varchar(60),
    ordertotalamount              numeric(32, 6) NOT NULL DEFAULT 0,
    salesorderprocessingstatus    integer NOT NULL DEFAULT 1,
    PRIMARY KEY (dataareaid, salesordernumber)
);

-- Sales order lines V2 (SalesOrderLineV2Entity): salesorderdetails.
CREATE TABLE fno.salesorderlines (
    dataareaid                 varchar(4) NOT NULL,
    salesordernumber           varchar(20) NOT NULL,
    linecreationsequencenumber integer NOT NULL,
    productnumber              varchar(20) NOT NULL,
    orderedsalesquantity       numeric(32, 6) NOT NULL DEFAULT 1,
    salesprice                 numeric(32, 6) NOT NULL DEFAULT 0,
    lineamount                 numeric(32, 6) NOT NULL DEFAULT 0,
    PRIMARY KEY (dataareaid, salesordernumber, linecreationsequencenumber)
);
