-- Staging tables the map library reads beyond the sample schema (fno-schema.sql), with
-- their F&O entity's column names and types:
--   Vendor groups (VendVendorGroupEntity): msdyn_vendorgroups, filled here from the vendor
--   groups the sample vendors use, plus one unused group per legal entity.
--
--   psql -v ON_ERROR_STOP=1 -f fno-schema.sql -f fno-sample-data.sql -f maps/fno-library.sql
CREATE TABLE IF NOT EXISTS fno.vendorgroups (
    dataareaid             varchar(4) NOT NULL,
    vendorgroupid          varchar(10) NOT NULL,
    description            varchar(60) NOT NULL DEFAULT '',
    defaultpaymenttermname varchar(10),
    PRIMARY KEY (dataareaid, vendorgroupid)
);

INSERT INTO fno.vendorgroups (dataareaid, vendorgroupid, description, defaultpaymenttermname)
SELECT g.dataareaid, g.vendorgroupid, 'Vendor group ' || g.vendorgroupid,
       (SELECT min(name) FROM fno.paymentterms p WHERE p.dataareaid = g.dataareaid)
  FROM (SELECT DISTINCT dataareaid, vendorgroupid FROM fno.vendorsv2 WHERE vendorgroupid IS NOT NULL
        UNION SELECT DISTINCT dataareaid, '90' FROM fno.vendorsv2) g
ON CONFLICT DO NOTHING;

-- Released products V2 (EcoResReleasedProductV2Entity): msdyn_sharedproductdetails, one per
-- product the sample's order lines name in each legal entity, plus one service item per
-- legal entity. producttype is EcoResProductType (Item 1, Service 2); isphantom is NoYes;
-- the primary vendor is the legal entity's first vendor.
CREATE TABLE IF NOT EXISTS fno.releasedproductsv2 (
    dataareaid                 varchar(4) NOT NULL,
    itemnumber                 varchar(20) NOT NULL,
    productnumber              varchar(20) NOT NULL,
    producttype                integer NOT NULL DEFAULT 1,
    salesprice                 numeric(32, 6) NOT NULL DEFAULT 0,
    purchaseprice              numeric(32, 6) NOT NULL DEFAULT 0,
    unitcost                   numeric(32, 6) NOT NULL DEFAULT 0,
    netproductweight           numeric(32, 6) NOT NULL DEFAULT 0,
    shelflifeperioddays        integer NOT NULL DEFAULT 0,
    isphantom                  integer NOT NULL DEFAULT 0,
    primaryvendoraccountnumber varchar(20),
    PRIMARY KEY (dataareaid, itemnumber)
);

INSERT INTO fno.releasedproductsv2 (dataareaid, itemnumber, productnumber, producttype,
                                    salesprice, purchaseprice, unitcost, netproductweight,
                                    shelflifeperioddays, isphantom, primaryvendoraccountnumber)
SELECT p.dataareaid, p.productnumber, p.productnumber, 1, max(l.salesprice),
       round(max(l.salesprice) * 0.6, 2), round(max(l.salesprice) * 0.55, 2),
       round(length(p.productnumber) * 0.125 + 0.5, 3), 0, 0,
       (SELECT min(vendoraccountnumber) FROM fno.vendorsv2 v WHERE v.dataareaid = p.dataareaid)
  FROM (SELECT DISTINCT dataareaid, productnumber FROM fno.salesorderlines) p
  JOIN fno.salesorderlines l USING (dataareaid, productnumber)
 GROUP BY p.dataareaid, p.productnumber
UNION ALL
SELECT DISTINCT dataareaid, 'SRV-INSTALL', 'SRV-INSTALL', 2, 120, 0, 80, 0, 30, 1, NULL
  FROM fno.salesorderlines
ON CONFLICT DO NOTHING;
