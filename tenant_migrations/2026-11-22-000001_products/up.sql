-- Data plane. Runs with search_path set to exactly the tenant's schema:
-- never qualify names and never change search_path here.
-- Every TENANT table: merchant_id first in every key, RLS enabled and
-- forced, and the fail-closed policy (an unbound or ended binding reads as
-- '' and matches nothing).

CREATE TABLE products (
    merchant_id   uuid NOT NULL,
    id            uuid NOT NULL,
    sku           text NOT NULL CHECK (length(sku) BETWEEN 1 AND 64),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    price_minor   bigint NOT NULL CHECK (price_minor >= 0),
    tax_rate_bps  integer NOT NULL DEFAULT 0 CHECK (tax_rate_bps BETWEEN 0 AND 10000),
    category_id   uuid,
    track_stock   boolean NOT NULL DEFAULT false,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, id),
    UNIQUE (merchant_id, sku)
);

ALTER TABLE products ENABLE ROW LEVEL SECURITY;
ALTER TABLE products FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON products
    USING (merchant_id = (SELECT NULLIF(current_setting('posd.merchant_id', true), '')::uuid))
    WITH CHECK (merchant_id = (SELECT NULLIF(current_setting('posd.merchant_id', true), '')::uuid));
