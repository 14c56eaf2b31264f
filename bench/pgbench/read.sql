-- GET /api/v2/POS/products/{id}: the statements posd sends, as captured
-- (pg_stat_statements, log_statement = all). BEGIN, the binding SELECT and
-- COMMIT come from TenantTx::transaction (posd sends BEGIN and the binding
-- in one round trip). The pool's `SELECT 1` check is skipped for a
-- connection checked out less than 0.5 s before, as under this load.
BEGIN;
SELECT set_config('posd.merchant_id', :mid, true), set_config('search_path', :sp, true);
SELECT "products"."merchant_id", "products"."id", "products"."sku", "products"."name", "products"."price_minor", "products"."tax_rate_bps", "products"."category_id", "products"."track_stock", "products"."active", "products"."created_at", "products"."updated_at", "products"."deleted_at" FROM "products" WHERE ((("products"."merchant_id" = :mid) AND ("products"."id" = :pid)) AND ("products"."deleted_at" IS NULL)) LIMIT :one;
COMMIT;
