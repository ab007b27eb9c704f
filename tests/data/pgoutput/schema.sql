-- Tables of the golden pgoutput recording (record.sh). Created before the slot.
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE DOMAIN amount AS numeric(12, 2);
CREATE TABLE vals (
    id int PRIMARY KEY,
    b bool, i2 int2, i4 int4, i8 int8, n numeric, n326 numeric(32, 6), f4 float4, f8 float8,
    t text, vc varchar(50), bp char(8), d date, tm time, ttz timetz, ts timestamp,
    tstz timestamptz, iv interval, u uuid, j json, jb jsonb, by bytea, m mood, pi posint,
    amt amount, ai int[], atx text[], atz timestamptz[], an numeric[], am mood[], a2 int[][],
    ip inet
);
CREATE TABLE ri_default (id int PRIMARY KEY, v text);
CREATE TABLE ri_full (id int, v text);
ALTER TABLE ri_full REPLICA IDENTITY FULL;
CREATE TABLE ri_index (a int NOT NULL, b varchar(10) NOT NULL, v text);
CREATE UNIQUE INDEX ri_index_ab ON ri_index (a, b);
ALTER TABLE ri_index REPLICA IDENTITY USING INDEX ri_index_ab;
CREATE TABLE toasty (id int PRIMARY KEY, small int, big text);
ALTER TABLE toasty ALTER big SET STORAGE EXTERNAL;
CREATE TABLE parent (id serial PRIMARY KEY, name text);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id), qty numeric(32, 6));
CREATE TABLE "Odd Name" ("Key Col" int PRIMARY KEY, "quote""d" text);
CREATE PUBLICATION golden FOR TABLE vals, ri_default, ri_full, ri_index, toasty, parent, child,
    "Odd Name";
