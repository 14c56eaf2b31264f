-- POST /api/v2/POS/orders (3 lines, one card payment): the statement posd
-- sends, as captured once it knows the products (every order after the
-- first of each product triple): one call of the tenant function, a
-- transaction of its own. bench/sections.py fills in the schema and the
-- product placeholders and writes one script per product triple.
-- Differences from posd, which change no plan: the ids posd makes (UUIDv7)
-- are derived from a random integer with lpad and to_hex, the stored
-- response is a sample order, and parameters carry a cast, because
-- pgbench sends untyped values.
\set r random(1, 1099511627775) * 8
\set k random(1, 9000000000000000000)
-- the catalog as priced checked, the key with its response, the order, its
-- lines and payment, the stock
SELECT * FROM @SP@.posd_sale_write(:mid::uuid, :k::text, :hash::text, :retention::interval, 201, :body::jsonb,
    lpad(to_hex(:r::bigint), 32, '0')::uuid, 'till', NULL::uuid, NULL::uuid, :staff::uuid, :currency::text, false,
    :total::bigint, 0::bigint, 0::bigint, :total::bigint, 0::bigint, :total::bigint, 0::bigint, NULL::text, now(), now(),
    :linenos::int4[], :pids@T@::uuid[], :skus@T@::text[], :names@T@::text[], :ones::int4[], :prices::int8[], :zeros::int4[],
    :prices::int8[], :zeros::int8[], :zeros::int8[], :prices::int8[],
    ARRAY[lpad(to_hex(:r::bigint + 1), 32, '0')::uuid], '{card}'::text[], ARRAY[:total::bigint], ARRAY[:total::bigint], '{bench}'::text[],
    :pids@T@::uuid[], :deltas::int8[],
    ARRAY[lpad(to_hex(:r::bigint + 2), 32, '0')::uuid, lpad(to_hex(:r::bigint + 3), 32, '0')::uuid, lpad(to_hex(:r::bigint + 4), 32, '0')::uuid],
    false, :prices::int8[], :zeros::int4[], :trues::bool[]);
