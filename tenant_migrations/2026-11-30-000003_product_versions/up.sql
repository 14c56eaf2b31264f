-- What each product cost, at which tax rate, and whether it was for sale,
-- from when. An offline bill is priced as the till saw the catalog at the
-- bill's time, not as it is when the bill arrives. Rows are written by the
-- trigger below on every change that matters, so no code path can forget.

CREATE TABLE product_versions (
    merchant_id   uuid NOT NULL,
    product_id    uuid NOT NULL,
    valid_from    timestamptz NOT NULL,
    price_minor   bigint NOT NULL CHECK (price_minor >= 0),
    tax_rate_bps  integer NOT NULL CHECK (tax_rate_bps BETWEEN 0 AND 10000),
    active        boolean NOT NULL,
    PRIMARY KEY (merchant_id, product_id, valid_from),
    FOREIGN KEY (merchant_id, product_id) REFERENCES products (merchant_id, id) ON DELETE CASCADE
);

ALTER TABLE product_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE product_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON product_versions
    USING (merchant_id = (SELECT NULLIF(current_setting('posd.merchant_id', true), '')::uuid))
    WITH CHECK (merchant_id = (SELECT NULLIF(current_setting('posd.merchant_id', true), '')::uuid));

-- The history starts with what each product is now, from its creation.
INSERT INTO product_versions (merchant_id, product_id, valid_from, price_minor, tax_rate_bps, active)
SELECT merchant_id, id, created_at, price_minor, tax_rate_bps, active AND deleted_at IS NULL
  FROM products;

-- Runs as the caller, under the same RLS; its search_path is the one this
-- migration runs with (the tenant's schema only), whoever calls it.
CREATE OR REPLACE FUNCTION record_product_version() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND (OLD.price_minor, OLD.tax_rate_bps, OLD.active, OLD.deleted_at)
           IS NOT DISTINCT FROM (NEW.price_minor, NEW.tax_rate_bps, NEW.active, NEW.deleted_at) THEN
        RETURN NULL;
    END IF;
    INSERT INTO product_versions (merchant_id, product_id, valid_from, price_minor, tax_rate_bps, active)
    VALUES (NEW.merchant_id, NEW.id, now(), NEW.price_minor, NEW.tax_rate_bps,
            NEW.active AND NEW.deleted_at IS NULL)
    ON CONFLICT (merchant_id, product_id, valid_from) DO UPDATE
       SET price_minor = EXCLUDED.price_minor,
           tax_rate_bps = EXCLUDED.tax_rate_bps,
           active = EXCLUDED.active;
    RETURN NULL;
END
$$;

CREATE TRIGGER product_versions
    AFTER INSERT OR UPDATE OF price_minor, tax_rate_bps, active, deleted_at ON products
    FOR EACH ROW EXECUTE FUNCTION record_product_version();
