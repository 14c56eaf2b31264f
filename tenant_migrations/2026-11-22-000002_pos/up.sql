-- The point-of-sale data plane: categories, stock, customers, orders,
-- payments, refunds and idempotency keys. Same rules as every tenant
-- migration: unqualified names, merchant_id first in every key, RLS enabled
-- and forced with the fail-closed policy.

CREATE TABLE categories (
    merchant_id  uuid NOT NULL,
    id           uuid NOT NULL,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    sort_order   integer NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, id)
);
CREATE UNIQUE INDEX categories_name ON categories (merchant_id, lower(name));

-- Products that appear on orders are soft-deleted: their sku is free again.
ALTER TABLE products ADD COLUMN deleted_at timestamptz;
ALTER TABLE products DROP CONSTRAINT products_merchant_id_sku_key;
CREATE UNIQUE INDEX products_sku ON products (merchant_id, sku) WHERE deleted_at IS NULL;
ALTER TABLE products ADD CONSTRAINT products_category_fk
    FOREIGN KEY (merchant_id, category_id) REFERENCES categories (merchant_id, id);
CREATE INDEX products_category ON products (merchant_id, category_id) WHERE category_id IS NOT NULL;

-- One level per product; it always equals the sum of the product's movements.
CREATE TABLE inventory_levels (
    merchant_id  uuid NOT NULL,
    product_id   uuid NOT NULL,
    on_hand      bigint NOT NULL DEFAULT 0,
    -- set when an offline sale took the level below zero: count the shelf
    needs_count  boolean NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, product_id),
    FOREIGN KEY (merchant_id, product_id) REFERENCES products (merchant_id, id) ON DELETE CASCADE
);
INSERT INTO inventory_levels (merchant_id, product_id) SELECT merchant_id, id FROM products;

CREATE TABLE customers (
    merchant_id  uuid NOT NULL,
    id           uuid NOT NULL,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email        text CHECK (length(email) <= 320),
    phone        text CHECK (length(phone) <= 40),
    note         text CHECK (length(note) <= 2000),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, id)
);
CREATE UNIQUE INDEX customers_email ON customers (merchant_id, lower(email)) WHERE email IS NOT NULL;

CREATE TABLE orders (
    merchant_id        uuid NOT NULL,
    id                 uuid NOT NULL,
    status             text NOT NULL CHECK (status IN ('completed', 'partially_refunded', 'refunded', 'voided')),
    source             text NOT NULL CHECK (source IN ('till', 'offline')),
    -- the till's own id for an offline bill: each is applied at most once
    client_bill_id     uuid,
    customer_id        uuid,
    staff_id           uuid NOT NULL,
    currency           text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    gross_minor        bigint NOT NULL CHECK (gross_minor >= 0),
    discount_minor     bigint NOT NULL CHECK (discount_minor >= 0),
    tax_minor          bigint NOT NULL CHECK (tax_minor >= 0),
    total_minor        bigint NOT NULL CHECK (total_minor >= 0),
    tendered_minor     bigint NOT NULL CHECK (tendered_minor >= 0),
    change_minor       bigint NOT NULL CHECK (change_minor >= 0),
    refunded_minor     bigint NOT NULL DEFAULT 0 CHECK (refunded_minor BETWEEN 0 AND total_minor),
    note               text CHECK (length(note) <= 500),
    -- when the sale happened (for an offline bill, on the till)
    created_at         timestamptz NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    voided_at          timestamptz,
    PRIMARY KEY (merchant_id, id),
    FOREIGN KEY (merchant_id, customer_id) REFERENCES customers (merchant_id, id),
    CHECK (total_minor = gross_minor - discount_minor + tax_minor),
    CHECK (tendered_minor - change_minor = total_minor)
);
CREATE UNIQUE INDEX orders_client_bill ON orders (merchant_id, client_bill_id) WHERE client_bill_id IS NOT NULL;
CREATE INDEX orders_created ON orders (merchant_id, created_at);

CREATE TABLE order_lines (
    merchant_id         uuid NOT NULL,
    order_id            uuid NOT NULL,
    line_no             integer NOT NULL CHECK (line_no >= 1),
    product_id          uuid NOT NULL,
    sku                 text NOT NULL,
    name                text NOT NULL,
    quantity            integer NOT NULL CHECK (quantity > 0),
    unit_price_minor    bigint NOT NULL CHECK (unit_price_minor >= 0),
    tax_rate_bps        integer NOT NULL CHECK (tax_rate_bps BETWEEN 0 AND 10000),
    gross_minor         bigint NOT NULL CHECK (gross_minor >= 0),
    discount_minor      bigint NOT NULL CHECK (discount_minor BETWEEN 0 AND gross_minor),
    tax_minor           bigint NOT NULL CHECK (tax_minor >= 0),
    total_minor         bigint NOT NULL CHECK (total_minor = gross_minor - discount_minor + tax_minor),
    refunded_quantity   integer NOT NULL DEFAULT 0 CHECK (refunded_quantity BETWEEN 0 AND quantity),
    refunded_minor      bigint NOT NULL DEFAULT 0 CHECK (refunded_minor BETWEEN 0 AND total_minor),
    PRIMARY KEY (merchant_id, order_id, line_no),
    FOREIGN KEY (merchant_id, order_id) REFERENCES orders (merchant_id, id),
    FOREIGN KEY (merchant_id, product_id) REFERENCES products (merchant_id, id)
);
CREATE INDEX order_lines_product ON order_lines (merchant_id, product_id);

CREATE TABLE payments (
    merchant_id     uuid NOT NULL,
    id              uuid NOT NULL,
    order_id        uuid NOT NULL,
    method          text NOT NULL CHECK (method IN ('cash', 'card', 'gift_card', 'other')),
    -- what the customer handed over, and what stays with the merchant
    tendered_minor  bigint NOT NULL CHECK (tendered_minor > 0),
    amount_minor    bigint NOT NULL CHECK (amount_minor BETWEEN 0 AND tendered_minor),
    reference       text CHECK (length(reference) <= 100),
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (merchant_id, id),
    FOREIGN KEY (merchant_id, order_id) REFERENCES orders (merchant_id, id)
);
CREATE INDEX payments_order ON payments (merchant_id, order_id);

CREATE TABLE refunds (
    merchant_id   uuid NOT NULL,
    id            uuid NOT NULL,
    order_id      uuid NOT NULL,
    amount_minor  bigint NOT NULL CHECK (amount_minor > 0),
    method        text NOT NULL CHECK (method IN ('cash', 'card', 'gift_card', 'other')),
    restock       boolean NOT NULL,
    reason        text CHECK (length(reason) <= 500),
    staff_id      uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, id),
    FOREIGN KEY (merchant_id, order_id) REFERENCES orders (merchant_id, id)
);
CREATE INDEX refunds_order ON refunds (merchant_id, order_id);
CREATE INDEX refunds_created ON refunds (merchant_id, created_at);

CREATE TABLE refund_lines (
    merchant_id   uuid NOT NULL,
    refund_id     uuid NOT NULL,
    order_id      uuid NOT NULL,
    line_no       integer NOT NULL,
    quantity      integer NOT NULL CHECK (quantity > 0),
    amount_minor  bigint NOT NULL CHECK (amount_minor >= 0),
    PRIMARY KEY (merchant_id, refund_id, line_no),
    FOREIGN KEY (merchant_id, refund_id) REFERENCES refunds (merchant_id, id),
    FOREIGN KEY (merchant_id, order_id, line_no) REFERENCES order_lines (merchant_id, order_id, line_no)
);

CREATE TABLE stock_movements (
    merchant_id  uuid NOT NULL,
    id           uuid NOT NULL,
    product_id   uuid NOT NULL,
    delta        bigint NOT NULL CHECK (delta <> 0),
    reason       text NOT NULL CHECK (reason IN ('sale', 'refund', 'void', 'receive', 'count', 'damage', 'correction')),
    order_id     uuid,
    refund_id    uuid,
    staff_id     uuid,
    note         text CHECK (length(note) <= 500),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, id),
    FOREIGN KEY (merchant_id, product_id) REFERENCES products (merchant_id, id) ON DELETE CASCADE
);
CREATE INDEX stock_movements_product ON stock_movements (merchant_id, product_id, created_at);

-- Stripe-style idempotency: one row per key, scoped to the merchant, kept
-- with the merchant's data so that it moves with it.
CREATE TABLE idempotency_keys (
    merchant_id      uuid NOT NULL,
    key              text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash     text NOT NULL,
    -- NULL while the first request is in flight
    response_status  integer,
    response_body    jsonb,
    locked_at        timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (merchant_id, expires_at);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['categories', 'inventory_levels', 'customers', 'orders', 'order_lines',
                             'payments', 'refunds', 'refund_lines', 'stock_movements', 'idempotency_keys'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (merchant_id = (SELECT NULLIF(current_setting(''posd.merchant_id'', true), '''')::uuid))
                 WITH CHECK (merchant_id = (SELECT NULLIF(current_setting(''posd.merchant_id'', true), '''')::uuid))',
            t);
    END LOOP;
END
$$;
