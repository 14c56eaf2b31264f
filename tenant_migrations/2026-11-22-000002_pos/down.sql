DROP TABLE idempotency_keys, stock_movements, refund_lines, refunds, payments, order_lines, orders,
    customers, inventory_levels;
DROP INDEX products_category;
ALTER TABLE products DROP CONSTRAINT products_category_fk;
DROP TABLE categories;
DROP INDEX products_sku;
ALTER TABLE products DROP COLUMN deleted_at;
ALTER TABLE products ADD CONSTRAINT products_merchant_id_sku_key UNIQUE (merchant_id, sku);
