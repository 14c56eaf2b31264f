-- POST /api/v2/POS/orders/{id}/refunds ({"amountMinor": 1}): the calls
-- posd makes, each a transaction of its own: the order as read, then the
-- refund written if the order is still as read. bench/sections.py fills
-- in the schema and the orders' ids. posd keeps the whole read; here
-- \gset keeps the two values the write checks. A write that finds the
-- order changed by another client writes nothing (posd reads again and
-- retries; pgbench counts it). The stored response is a sample order, the
-- audit details are empty.
\set k random(1, 9000000000000000000)
\set o random(1, :norders)
SELECT item->>'status' AS st, (item->>'refunded_minor')::bigint AS rf
  FROM @SP@.posd_order_read(:mid::uuid, :k::text, (@ORDERS@::uuid[])[:o]) WHERE kind = 'order' \gset
SELECT * FROM @SP@.posd_order_change(:mid::uuid, :k::text, :hash::text, :retention::interval, 201, :body::jsonb,
    (@ORDERS@::uuid[])[:o], :st::text, :rf::bigint, 'partially_refunded', :rf::bigint + 1, now(), :staff::uuid,
    gen_random_uuid(), 1::bigint, 'card', false, NULL::text, '{}'::int4[], '{}'::int4[], '{}'::int8[],
    '{}'::uuid[], '{}'::int8[], '{}'::uuid[],
    gen_random_uuid(), :staff::uuid, 'owner', 'order_refunded', '{}'::jsonb, NULL::text);
