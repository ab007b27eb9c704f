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
