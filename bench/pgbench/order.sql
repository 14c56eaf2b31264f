-- POST /api/v2/POS/orders (3 lines, one card payment): the statements posd
-- sends, as captured, in its one transaction. bench/sections.py fills in
-- the product placeholders and writes one script per product triple.
-- Differences from posd, which change no plan: the ids posd makes (UUIDv7)
-- are derived from a random integer with lpad and to_hex, and parameters
-- carry a cast, because pgbench sends untyped values.
\set r random(1, 1099511627775) * 8
\set k random(1, 9000000000000000000)
BEGIN;
SELECT set_config('posd.merchant_id', :mid, true), set_config('search_path', :sp, true);
-- the idempotency claim
WITH purge AS (
     DELETE FROM idempotency_keys
      WHERE merchant_id = :mid AND key IN (
            SELECT key FROM idempotency_keys
             WHERE merchant_id = :mid AND expires_at < now() AND key <> :k
             LIMIT :purge
               FOR UPDATE SKIP LOCKED)
 )
 INSERT INTO idempotency_keys AS k (merchant_id, key, request_hash, locked_at, expires_at)
 SELECT :mid::uuid, :k::text, :hash::text, now(), now() + :retention::interval
  WHERE pg_try_advisory_xact_lock(hashtextextended(:mid::uuid::text || ' ' || :k::text, 0))
 ON CONFLICT (merchant_id, key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, response_status = NULL,
        response_body = NULL, locked_at = now(), expires_at = EXCLUDED.expires_at
  WHERE k.expires_at < now()
     OR (k.response_status IS NULL AND k.request_hash = EXCLUDED.request_hash)
 RETURNING true AS claimed;
-- the products
SELECT "products"."merchant_id", "products"."id", "products"."sku", "products"."name", "products"."price_minor", "products"."tax_rate_bps", "products"."category_id", "products"."track_stock", "products"."active", "products"."created_at", "products"."updated_at", "products"."deleted_at" FROM "products" WHERE ((("products"."merchant_id" = :mid) AND ("products"."id" = ANY(:pids@T@))) AND ("products"."deleted_at" IS NULL));
-- the order, its lines and its payment
WITH o AS (
     INSERT INTO orders (merchant_id, id, status, source, client_bill_id, customer_id,
         staff_id, currency, gross_minor, discount_minor, tax_minor, total_minor,
         tendered_minor, change_minor, refunded_minor, note, created_at, recorded_at,
         voided_at)
     VALUES (:mid::uuid, lpad(to_hex(:r::bigint), 32, '0')::uuid, 'completed', 'till', NULL::uuid, NULL::uuid, :staff::uuid, :currency::text,
         :total::bigint, 0::bigint, 0::bigint, :total::bigint, :total::bigint, 0::bigint, 0::bigint, NULL::text,
         now(), now(), NULL::timestamptz)
 ), l AS (
     INSERT INTO order_lines (merchant_id, order_id, line_no, product_id, sku, name,
         quantity, unit_price_minor, tax_rate_bps, gross_minor, discount_minor,
         tax_minor, total_minor, refunded_quantity, refunded_minor)
     SELECT :mid::uuid, lpad(to_hex(:r::bigint), 32, '0')::uuid, u.*
       FROM unnest(:linenos::int4[], :pids@T@::uuid[], :skus::text[], :names::text[], :ones::int4[], :prices::int8[], :zeros::int4[], :prices::int8[], :zeros::int8[], :zeros::int8[], :prices::int8[], :zeros::int4[], :zeros::int8[]) AS u
 )
 INSERT INTO payments (merchant_id, id, order_id, method, tendered_minor, amount_minor,
     reference, created_at)
 SELECT :mid::uuid, u.id, lpad(to_hex(:r::bigint), 32, '0')::uuid, u.method, u.tendered, u.amount, u.reference, now()
   FROM unnest(ARRAY[lpad(to_hex(:r::bigint + 1), 32, '0')::uuid], '{card}'::text[], ARRAY[:total::bigint], ARRAY[:total::bigint], '{bench}'::text[]) AS u(id, method, tendered, amount, reference);
-- the stock
WITH req AS (
     SELECT * FROM unnest(:pids@T@::uuid[], :deltas::int8[], ARRAY[lpad(to_hex(:r::bigint + 2), 32, '0')::uuid, lpad(to_hex(:r::bigint + 3), 32, '0')::uuid, lpad(to_hex(:r::bigint + 4), 32, '0')::uuid]) AS r(product_id, delta, movement_id)
 ), locked AS MATERIALIZED (
     SELECT l.product_id, l.on_hand + r.delta AS on_hand
       FROM inventory_levels l JOIN req r ON r.product_id = l.product_id
      WHERE l.merchant_id = :mid
      ORDER BY l.product_id
        FOR UPDATE OF l
 ), ok AS (
     SELECT count(*) = cardinality(:pids@T@::uuid[]) AND (false OR coalesce(bool_and(on_hand >= 0), true)) AS ok
       FROM locked
 ), level AS (
     UPDATE inventory_levels l
        SET on_hand = k.on_hand, needs_count = l.needs_count OR k.on_hand < 0,
            updated_at = now()
       FROM locked k, ok
      WHERE ok.ok AND l.merchant_id = :mid AND l.product_id = k.product_id
  RETURNING l.product_id
 ), moved AS (
     INSERT INTO stock_movements
         (merchant_id, id, product_id, delta, reason, order_id, refund_id, staff_id, note)
     SELECT :mid::uuid, r.movement_id, r.product_id, r.delta, :reason::text, lpad(to_hex(:r::bigint), 32, '0')::uuid, NULL::uuid, :staff::uuid, NULL::text
       FROM level JOIN req r ON r.product_id = level.product_id
 )
 SELECT k.product_id, k.on_hand, ok.ok AS applied FROM locked k, ok ORDER BY k.product_id;
-- the stored response
UPDATE idempotency_keys SET response_status = 201, response_body = :body::jsonb
 WHERE merchant_id = :mid AND key = :k::text;
COMMIT;
