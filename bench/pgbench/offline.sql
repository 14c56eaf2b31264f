-- POST /api/v2/POS/offline-bills (a batch of bills, 3 lines and a card
-- payment each, sold a minute ago): the statements posd sends, in the
-- batch's one transaction: BEGIN with the binding, then per bill the two
-- calls of the sale functions, then COMMIT. bench/sections.py fills in the
-- schema and repeats the bill's part (between the markers) per bill.
\set r random(1, 1099511627775) * 64
BEGIN;
SELECT set_config('posd.merchant_id', :mid, true), set_config('search_path', :sp, true);
-- @BILL@
SELECT * FROM @SP@.posd_sale_read(:mid::uuid, NULL::text, :pids@T@::uuid[], now() - interval '1 minute', NULL::uuid,
    lpad(to_hex(:r::bigint + 8 * @I@), 32, '0')::uuid);
SELECT * FROM @SP@.posd_bill_write(:mid::uuid, NULL::text, NULL::text, NULL::interval, NULL::integer, NULL::jsonb,
    lpad(to_hex(:r::bigint + 8 * @I@ + 1), 32, '0')::uuid, 'offline', lpad(to_hex(:r::bigint + 8 * @I@), 32, '0')::uuid,
    NULL::uuid, :staff::uuid, :currency::text, false,
    :total::bigint, 0::bigint, 0::bigint, :total::bigint, 0::bigint, :total::bigint, 0::bigint, NULL::text,
    now() - interval '1 minute', now(),
    :linenos::int4[], :pids@T@::uuid[], :skus@T@::text[], :names@T@::text[], :ones::int4[], :prices::int8[], :zeros::int4[],
    :prices::int8[], :zeros::int8[], :zeros::int8[], :prices::int8[],
    ARRAY[lpad(to_hex(:r::bigint + 8 * @I@ + 2), 32, '0')::uuid], '{card}'::text[], ARRAY[:total::bigint], ARRAY[:total::bigint], '{NULL}'::text[],
    :pids@T@::uuid[], :deltas::int8[],
    ARRAY[lpad(to_hex(:r::bigint + 8 * @I@ + 3), 32, '0')::uuid, lpad(to_hex(:r::bigint + 8 * @I@ + 4), 32, '0')::uuid, lpad(to_hex(:r::bigint + 8 * @I@ + 5), 32, '0')::uuid],
    true, NULL::int8[], NULL::int4[], NULL::bool[]);
-- @END@
COMMIT;
