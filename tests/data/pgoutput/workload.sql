-- The changes of the golden pgoutput recording (record.sh), one transaction per statement
-- unless grouped. Every value type of values.h and every pgoutput message appears.
INSERT INTO vals VALUES (1, true, 32767, 2147483647, 9223372036854775807, 3.14159,
    1234567.890000, 1.5, 0.1, 'plain text', 'varchar', 'ab', '2026-11-22', '13:45:07.123',
    '13:45:07+02', '2026-11-22 10:00:00.123456', '2026-11-22 10:00:00.5+01', '1 day 02:03:04',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2.50], "b": {"c": null}}',
    '{"k": "v", "n": 12345678901234567890.5}', '\x00ff10', 'happy', 42, 1234.50, '{1,2,3}',
    '{"a b","c,d","e\"f","g\\h",NULL,""}', '{"2020-01-01 00:00:00+00","infinity"}',
    '{1.10,NaN}', '{sad,happy}', '{{1,2},{3,4}}', '192.168.0.1/24');
INSERT INTO vals (id) VALUES (2);
INSERT INTO vals (id, t, vc, bp, j, atx) VALUES (3, '', '', '', '"str\nline"', '{}');
INSERT INTO vals (id, t, vc, bp, jb) VALUES (4, 'unicode: é 日本 😀 tab	end', 'quote " back \ slash',
    'é  ', '[true, false, "\u00e9\n"]');
INSERT INTO vals (id, n, n326, f4, f8, i2, i4, i8, d, ts, tstz, tm, ttz) VALUES (5,
    -123456789012345678901234567890.123456789, -0.000001, '-0', '-0', -32768, -2147483648,
    -9223372036854775808, '1900-02-28', '1969-12-31 23:59:59.999999', '1901-06-30 12:00:00-03:30',
    '24:00:00', '00:00:00-11:30');
INSERT INTO vals (id, d, ts, tstz) VALUES (6, '0044-03-15 BC', '0001-01-01 00:00:00 BC',
    '12345-06-07 08:09:10+00');
INSERT INTO vals (id, d, ts, tstz) VALUES (7, '12345-06-07', 'infinity', '-infinity');
INSERT INTO vals (id, n, f4, f8) VALUES (8, 'NaN', 'Infinity', '-Infinity');
INSERT INTO vals (id, f8, n) VALUES (9, 1e300, 0.0000000000000000000001);
INSERT INTO vals (id, t) VALUES (10, repeat('huge ', 4000));
UPDATE vals SET i4 = 1 WHERE id = 1;
DELETE FROM vals WHERE id = 2;
-- replica identities and key changes
INSERT INTO ri_default VALUES (1, 'one'), (2, 'two');
UPDATE ri_default SET v = 'uno' WHERE id = 1;
UPDATE ri_default SET id = 10 WHERE id = 2;
DELETE FROM ri_default WHERE id = 10;
INSERT INTO ri_full VALUES (1, 'one');
UPDATE ri_full SET v = 'uno' WHERE id = 1;
DELETE FROM ri_full WHERE id = 1;
INSERT INTO ri_index VALUES (1, 'x', 'one');
UPDATE ri_index SET v = 'uno' WHERE a = 1;
UPDATE ri_index SET b = 'y' WHERE a = 1;
DELETE FROM ri_index WHERE a = 1;
-- unchanged TOAST
INSERT INTO toasty VALUES (1, 1, repeat('0123456789', 1000));
UPDATE toasty SET small = 2 WHERE id = 1;
UPDATE toasty SET big = 'short now' WHERE id = 1;
-- several tables in one transaction, parents before children
BEGIN;
INSERT INTO parent (name) VALUES ('p1');
INSERT INTO child VALUES (1, 1, 10.500000);
UPDATE parent SET name = 'p1b' WHERE id = 1;
COMMIT;
-- schema changes between changes
ALTER TABLE ri_default ADD COLUMN extra numeric(10, 2);
INSERT INTO ri_default VALUES (3, 'three', 3.30);
ALTER TABLE ri_default RENAME COLUMN v TO label;
INSERT INTO ri_default VALUES (4, 'four', 4.40);
ALTER TABLE ri_default DROP COLUMN extra;
INSERT INTO ri_default VALUES (5, 'five');
ALTER TABLE ri_default ALTER COLUMN label TYPE varchar(20);
UPDATE ri_default SET label = 'FIVE' WHERE id = 5;
-- quoted names
INSERT INTO "Odd Name" VALUES (1, 'x');
-- logical messages, transactional and not
BEGIN;
SELECT pg_logical_emit_message(true, 'dwasync', 'in a transaction');
INSERT INTO ri_full VALUES (2, 'two');
COMMIT;
SELECT pg_logical_emit_message(false, 'dwasync', 'outside');
-- origin
SELECT pg_replication_origin_create('golden_origin');
BEGIN;
SELECT pg_replication_origin_session_setup('golden_origin');
SELECT pg_replication_origin_xact_setup('0/AB', now());
INSERT INTO ri_full VALUES (3, 'from origin');
COMMIT;
SELECT pg_replication_origin_session_reset();
-- truncate of several tables, with options
TRUNCATE ri_full, ri_index RESTART IDENTITY;
TRUNCATE parent, child CASCADE;
INSERT INTO ri_full VALUES (4, 'after truncate');
