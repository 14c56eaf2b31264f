-- POST /api/v2/POS/orders (3 lines, one card payment): the statements posd
-- sends, as captured, in its two transactions. bench/sections.py fills in
-- the product placeholders and writes one script per product triple.
-- Differences from posd, which change no plan: the ids posd makes (UUIDv7)
-- are derived from a random integer with lpad and to_hex, and a few
-- parameters carry a cast, because pgbench sends untyped values.
\set r random(1, 1099511627775) * 8
\set k random(1, 9000000000000000000)
-- the idempotency claim (its own transaction)
SELECT 1;
BEGIN;
SELECT set_config('posd.merchant_id', :mid, true), set_config('search_path', :sp, true);
WITH purge AS (
     DELETE FROM idempotency_keys
      WHERE merchant_id = :mid AND key IN (
            SELECT key FROM idempotency_keys
             WHERE merchant_id = :mid AND expires_at < now() AND key <> :k
             LIMIT :purge)
 )
 INSERT INTO idempotency_keys AS k (merchant_id, key, request_hash, locked_at, expires_at)
 VALUES (:mid, :k, :hash, now(), now() + :retention::interval)
 ON CONFLICT (merchant_id, key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, response_status = NULL,
        response_body = NULL, locked_at = now(), expires_at = EXCLUDED.expires_at
  WHERE k.expires_at < now()
     OR (k.response_status IS NULL AND k.request_hash = EXCLUDED.request_hash
         AND k.locked_at < now() - :stale::interval)
 RETURNING true AS claimed;
COMMIT;
-- the order (its own transaction)
SELECT 1;
BEGIN;
SELECT set_config('posd.merchant_id', :mid, true), set_config('search_path', :sp, true);
SELECT "products"."merchant_id", "products"."id", "products"."sku", "products"."name", "products"."price_minor", "products"."tax_rate_bps", "products"."category_id", "products"."track_stock", "products"."active", "products"."created_at", "products"."updated_at", "products"."deleted_at" FROM "products" WHERE ((("products"."merchant_id" = :mid) AND ("products"."id" = ANY(:pids@T@))) AND ("products"."deleted_at" IS NULL));
WITH level AS (
     UPDATE inventory_levels
        SET on_hand = on_hand + :delta,
            needs_count = needs_count OR (on_hand + :delta < 0),
            updated_at = now()
      WHERE merchant_id = :mid AND product_id = :@P1@ AND (false OR on_hand + :delta >= 0)
  RETURNING on_hand
 ), moved AS (
     INSERT INTO stock_movements
         (merchant_id, id, product_id, delta, reason, order_id, refund_id, staff_id, note)
     SELECT :mid::uuid, lpad(to_hex(:r::bigint + 2), 32, '0')::uuid, :@P1@::uuid, :delta::bigint, :reason::text, lpad(to_hex(:r::bigint), 32, '0')::uuid, NULL::uuid, :staff::uuid, NULL::text FROM level
 )
 SELECT on_hand FROM level;
WITH level AS (
     UPDATE inventory_levels
        SET on_hand = on_hand + :delta,
            needs_count = needs_count OR (on_hand + :delta < 0),
            updated_at = now()
      WHERE merchant_id = :mid AND product_id = :@P2@ AND (false OR on_hand + :delta >= 0)
  RETURNING on_hand
 ), moved AS (
     INSERT INTO stock_movements
         (merchant_id, id, product_id, delta, reason, order_id, refund_id, staff_id, note)
     SELECT :mid::uuid, lpad(to_hex(:r::bigint + 3), 32, '0')::uuid, :@P2@::uuid, :delta::bigint, :reason::text, lpad(to_hex(:r::bigint), 32, '0')::uuid, NULL::uuid, :staff::uuid, NULL::text FROM level
 )
 SELECT on_hand FROM level;
WITH level AS (
     UPDATE inventory_levels
        SET on_hand = on_hand + :delta,
            needs_count = needs_count OR (on_hand + :delta < 0),
            updated_at = now()
      WHERE merchant_id = :mid AND product_id = :@P3@ AND (false OR on_hand + :delta >= 0)
  RETURNING on_hand
 ), moved AS (
     INSERT INTO stock_movements
         (merchant_id, id, product_id, delta, reason, order_id, refund_id, staff_id, note)
     SELECT :mid::uuid, lpad(to_hex(:r::bigint + 4), 32, '0')::uuid, :@P3@::uuid, :delta::bigint, :reason::text, lpad(to_hex(:r::bigint), 32, '0')::uuid, NULL::uuid, :staff::uuid, NULL::text FROM level
 )
 SELECT on_hand FROM level;
INSERT INTO "orders" ("merchant_id", "id", "status", "source", "client_bill_id", "customer_id", "staff_id", "currency", "gross_minor", "discount_minor", "tax_minor", "total_minor", "tendered_minor", "change_minor", "refunded_minor", "note", "created_at", "recorded_at", "voided_at") VALUES (:mid, lpad(to_hex(:r::bigint), 32, '0')::uuid, 'completed', 'till', DEFAULT, DEFAULT, :staff, :currency, :total, 0, 0, :total, :total, 0, 0, DEFAULT, now(), now(), DEFAULT);
INSERT INTO "order_lines" ("merchant_id", "order_id", "line_no", "product_id", "sku", "name", "quantity", "unit_price_minor", "tax_rate_bps", "gross_minor", "discount_minor", "tax_minor", "total_minor", "refunded_quantity", "refunded_minor") VALUES (:mid, lpad(to_hex(:r::bigint), 32, '0')::uuid, 1, :@P1@, :sku, :name, 1, :price, 0, :price, 0, 0, :price, 0, 0), (:mid, lpad(to_hex(:r::bigint), 32, '0')::uuid, 2, :@P2@, :sku, :name, 1, :price, 0, :price, 0, 0, :price, 0, 0), (:mid, lpad(to_hex(:r::bigint), 32, '0')::uuid, 3, :@P3@, :sku, :name, 1, :price, 0, :price, 0, 0, :price, 0, 0);
INSERT INTO "payments" ("merchant_id", "id", "order_id", "method", "tendered_minor", "amount_minor", "reference", "created_at") VALUES (:mid, lpad(to_hex(:r::bigint + 1), 32, '0')::uuid, lpad(to_hex(:r::bigint), 32, '0')::uuid, 'card', :total, :total, 'bench', now());
UPDATE "idempotency_keys" SET "response_status" = 201, "response_body" = :body WHERE (("idempotency_keys"."merchant_id" = :mid) AND ("idempotency_keys"."key" = :k));
COMMIT;
