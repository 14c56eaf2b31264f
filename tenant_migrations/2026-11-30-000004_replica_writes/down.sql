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
