-- A sale in two round trips. posd prices a sale in Rust (pricing, tax and
-- tender rules live there), so it needs the catalog first and writes
-- second; each step is one call of a function below, and each call is a
-- transaction of its own (no BEGIN, no COMMIT sent):
--
--   posd_sale_read   binds the merchant, then answers everything pricing
--                    needs: the products (for an offline bill, as they were
--                    at the bill's time), whether the customer exists,
--                    whether the bill was already applied, and what is
--                    stored under the request's idempotency key.
--   posd_sale_write  binds the merchant, claims the idempotency key with
--                    the response already in it, writes the order, its
--                    lines and payments, takes the stock; all or nothing.
--
-- Both are SECURITY INVOKER (the service's role, row-level security
-- applies) and pin search_path to this schema: whoever calls them reaches
-- this schema's tables only, and the binding (posd.merchant_id) is set
-- inside the call's own transaction before any table is touched. They are
-- tenant migrations, so they are versioned with the tables they write,
-- installed on every tier and on a merchant's new placement.

CREATE OR REPLACE FUNCTION posd_sale_read(
    p_merchant uuid,
    p_key text,            -- the Idempotency-Key, NULL for an offline bill
    p_products uuid[],
    p_at timestamptz,      -- an offline bill's time: price as the catalog was then
    p_customer uuid,
    p_bill uuid)           -- an offline bill's client id
RETURNS TABLE (kind text, id uuid, sku text, name text, price_minor bigint,
               tax_rate_bps integer, active boolean, track_stock boolean,
               request_hash text, response_status integer, response_body jsonb)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('posd.merchant_id', p_merchant::text, true);
    RETURN QUERY
        SELECT 'key', NULL::uuid, NULL::text, NULL::text, NULL::bigint, NULL::integer,
               NULL::boolean, NULL::boolean, k.request_hash, k.response_status, k.response_body
          FROM idempotency_keys k
         WHERE p_key IS NOT NULL AND k.merchant_id = p_merchant AND k.key = p_key
           AND k.expires_at >= now();
    RETURN QUERY
        SELECT 'customer', c.id, NULL::text, NULL::text, NULL::bigint, NULL::integer,
               NULL::boolean, NULL::boolean, NULL::text, NULL::integer, NULL::jsonb
          FROM customers c
         WHERE p_customer IS NOT NULL AND c.merchant_id = p_merchant AND c.id = p_customer;
    RETURN QUERY
        SELECT 'bill', o.id, NULL::text, NULL::text, NULL::bigint, NULL::integer,
               NULL::boolean, NULL::boolean, NULL::text, NULL::integer, NULL::jsonb
          FROM orders o
         WHERE p_bill IS NOT NULL AND o.merchant_id = p_merchant AND o.client_bill_id = p_bill;
    RETURN QUERY
        SELECT 'product', p.id, p.sku, p.name, coalesce(v.price_minor, p.price_minor),
               coalesce(v.tax_rate_bps, p.tax_rate_bps), coalesce(v.active, p.active),
               p.track_stock, NULL::text, NULL::integer, NULL::jsonb
          FROM products p
          LEFT JOIN LATERAL (
                SELECT pv.price_minor, pv.tax_rate_bps, pv.active
                  FROM product_versions pv
                 WHERE pv.merchant_id = p.merchant_id AND pv.product_id = p.id
                 ORDER BY pv.valid_from <= p_at DESC,
                          CASE WHEN pv.valid_from <= p_at THEN pv.valid_from END DESC,
                          pv.valid_from
                 LIMIT 1) v ON p_at IS NOT NULL
         WHERE p.merchant_id = p_merchant AND p.id = ANY (p_products) AND p.deleted_at IS NULL;
END
$$;

-- The writes of one sale, in the caller's transaction: the order, its lines
-- and payments, then the stock (levels locked in product id order, so that
-- concurrent sales cannot deadlock), one movement per product. Stock that
-- would go below zero, unless allowed, or a product with no level, raises
-- 'posd: insufficient stock' (SQLSTATE PS001) with the product id as DETAIL,
-- which undoes everything the call wrote.
CREATE OR REPLACE FUNCTION posd_sale_record(
    p_merchant uuid, p_id uuid, p_source text, p_bill uuid, p_customer uuid, p_staff uuid,
    p_currency text, p_prices_include_tax boolean, p_gross bigint, p_discount bigint,
    p_tax bigint, p_total bigint, p_rounding bigint, p_tendered bigint, p_change bigint,
    p_note text, p_created_at timestamptz, p_recorded_at timestamptz,
    l_no integer[], l_product uuid[], l_sku text[], l_name text[], l_quantity integer[],
    l_unit bigint[], l_tax_rate integer[], l_gross bigint[], l_discount bigint[],
    l_tax bigint[], l_total bigint[],
    pay_id uuid[], pay_method text[], pay_tendered bigint[], pay_amount bigint[],
    pay_reference text[],
    s_product uuid[], s_delta bigint[], s_movement uuid[], s_allow_negative boolean)
RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    stopped_by uuid;
BEGIN
    INSERT INTO orders (merchant_id, id, status, source, client_bill_id, customer_id, staff_id,
        currency, prices_include_tax, gross_minor, discount_minor, tax_minor, total_minor,
        rounding_minor, tendered_minor, change_minor, refunded_minor, note, created_at,
        recorded_at)
    VALUES (p_merchant, p_id, 'completed', p_source, p_bill, p_customer, p_staff, p_currency,
        p_prices_include_tax, p_gross, p_discount, p_tax, p_total, p_rounding, p_tendered,
        p_change, 0, p_note, p_created_at, p_recorded_at);
    INSERT INTO order_lines (merchant_id, order_id, line_no, product_id, sku, name, quantity,
        unit_price_minor, tax_rate_bps, gross_minor, discount_minor, tax_minor, total_minor)
    SELECT p_merchant, p_id, u.*
      FROM unnest(l_no, l_product, l_sku, l_name, l_quantity, l_unit, l_tax_rate, l_gross,
                  l_discount, l_tax, l_total) AS u;
    INSERT INTO payments (merchant_id, id, order_id, method, tendered_minor, amount_minor,
        reference, created_at)
    SELECT p_merchant, u.id, p_id, u.method, u.tendered, u.amount, u.reference, p_created_at
      FROM unnest(pay_id, pay_method, pay_tendered, pay_amount, pay_reference)
           AS u(id, method, tendered, amount, reference);
    IF cardinality(s_product) > 0 THEN
        WITH req AS (
            SELECT * FROM unnest(s_product, s_delta, s_movement) AS r(product_id, delta, movement_id)
        ), locked AS MATERIALIZED (
            SELECT l.product_id, l.on_hand + r.delta AS on_hand
              FROM inventory_levels l JOIN req r ON r.product_id = l.product_id
             WHERE l.merchant_id = p_merchant
             ORDER BY l.product_id
               FOR UPDATE OF l
        ), stopped AS (
            SELECT r.product_id
              FROM req r LEFT JOIN locked k ON k.product_id = r.product_id
             WHERE k.product_id IS NULL OR (k.on_hand < 0 AND NOT s_allow_negative)
             ORDER BY r.product_id
             LIMIT 1
        ), level AS (
            UPDATE inventory_levels l
               SET on_hand = k.on_hand, needs_count = l.needs_count OR k.on_hand < 0,
                   updated_at = now()
              FROM locked k
             WHERE NOT EXISTS (SELECT FROM stopped)
               AND l.merchant_id = p_merchant AND l.product_id = k.product_id
         RETURNING l.product_id
        ), moved AS (
            INSERT INTO stock_movements (merchant_id, id, product_id, delta, reason, order_id, staff_id)
            SELECT p_merchant, r.movement_id, r.product_id, r.delta, 'sale', p_id, p_staff
              FROM level JOIN req r ON r.product_id = level.product_id
        )
        SELECT product_id INTO stopped_by FROM stopped;
        IF stopped_by IS NOT NULL THEN
            RAISE EXCEPTION 'posd: insufficient stock'
                USING ERRCODE = 'PS001', DETAIL = stopped_by::text;
        END IF;
    END IF;
END
$$;

-- One sale, as one transaction when called on its own: binds the merchant,
-- claims the idempotency key (if any) with the response stored at once,
-- records the sale. Answers one row:
--   created            the sale is written (order_id);
--   replay             the key holds this request's response (status, body);
--   mismatch           the key was used for another request;
--   in_flight          a request holding the key is still running;
--   duplicate          the offline bill was applied already (order_id);
--   short              an offline bill's product has no stock level
--                      (short_product); nothing was written;
--   foreign_key, check an offline bill broke that constraint (the message
--                      in response_body); nothing was written.
-- An offline bill (p_bill set) is recorded in a subtransaction, so that a
-- bill applied by a concurrent batch or refused for its stock leaves the
-- caller's batch going; a till sale is not (its failure fails the call).
CREATE OR REPLACE FUNCTION posd_sale_write(
    p_merchant uuid, p_key text, p_hash text, p_retention interval,
    p_status integer, p_body jsonb,
    p_id uuid, p_source text, p_bill uuid, p_customer uuid, p_staff uuid,
    p_currency text, p_prices_include_tax boolean, p_gross bigint, p_discount bigint,
    p_tax bigint, p_total bigint, p_rounding bigint, p_tendered bigint, p_change bigint,
    p_note text, p_created_at timestamptz, p_recorded_at timestamptz,
    l_no integer[], l_product uuid[], l_sku text[], l_name text[], l_quantity integer[],
    l_unit bigint[], l_tax_rate integer[], l_gross bigint[], l_discount bigint[],
    l_tax bigint[], l_total bigint[],
    pay_id uuid[], pay_method text[], pay_tendered bigint[], pay_amount bigint[],
    pay_reference text[],
    s_product uuid[], s_delta bigint[], s_movement uuid[], s_allow_negative boolean)
RETURNS TABLE (outcome text, order_id uuid, short_product uuid, response_status integer,
               response_body jsonb)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    claimed boolean;
    stored_hash text;
    stored_status integer;
    stored_body jsonb;
    detail text;
BEGIN
    PERFORM set_config('posd.merchant_id', p_merchant::text, true);
    IF p_key IS NOT NULL THEN
        -- Taken only if no other transaction holds the key's lock: a
        -- duplicate in flight is told so at once instead of waiting.
        INSERT INTO idempotency_keys AS k (merchant_id, key, request_hash, response_status,
            response_body, locked_at, expires_at)
        SELECT p_merchant, p_key, p_hash, p_status, p_body, now(), now() + p_retention
         WHERE pg_try_advisory_xact_lock(hashtextextended(p_merchant::text || ' ' || p_key, 0))
        ON CONFLICT (merchant_id, key) DO UPDATE
           SET request_hash = EXCLUDED.request_hash, response_status = EXCLUDED.response_status,
               response_body = EXCLUDED.response_body, locked_at = now(),
               expires_at = EXCLUDED.expires_at
         WHERE k.expires_at < now()
            OR (k.response_status IS NULL AND k.request_hash = EXCLUDED.request_hash)
        RETURNING true INTO claimed;
        IF claimed IS NULL THEN
            SELECT k.request_hash, k.response_status, k.response_body
              INTO stored_hash, stored_status, stored_body
              FROM idempotency_keys k
             WHERE k.merchant_id = p_merchant AND k.key = p_key AND k.expires_at >= now();
            RETURN QUERY SELECT
                CASE WHEN stored_hash IS NOT NULL AND stored_hash <> p_hash THEN 'mismatch'
                     WHEN stored_status IS NOT NULL AND stored_body IS NOT NULL THEN 'replay'
                     ELSE 'in_flight' END,
                NULL::uuid, NULL::uuid, stored_status, stored_body;
            RETURN;
        END IF;
    END IF;
    IF p_bill IS NULL THEN
        PERFORM posd_sale_record(p_merchant, p_id, p_source, p_bill, p_customer, p_staff,
            p_currency, p_prices_include_tax, p_gross, p_discount, p_tax, p_total, p_rounding,
            p_tendered, p_change, p_note, p_created_at, p_recorded_at, l_no, l_product, l_sku,
            l_name, l_quantity, l_unit, l_tax_rate, l_gross, l_discount, l_tax, l_total, pay_id,
            pay_method, pay_tendered, pay_amount, pay_reference, s_product, s_delta, s_movement,
            s_allow_negative);
    ELSE
        BEGIN
            PERFORM posd_sale_record(p_merchant, p_id, p_source, p_bill, p_customer, p_staff,
                p_currency, p_prices_include_tax, p_gross, p_discount, p_tax, p_total, p_rounding,
                p_tendered, p_change, p_note, p_created_at, p_recorded_at, l_no, l_product, l_sku,
                l_name, l_quantity, l_unit, l_tax_rate, l_gross, l_discount, l_tax, l_total, pay_id,
                pay_method, pay_tendered, pay_amount, pay_reference, s_product, s_delta, s_movement,
                s_allow_negative);
        EXCEPTION
            WHEN unique_violation THEN
                RETURN QUERY SELECT 'duplicate', o.id, NULL::uuid, NULL::integer, NULL::jsonb
                  FROM orders o WHERE o.merchant_id = p_merchant AND o.client_bill_id = p_bill;
                IF NOT FOUND THEN
                    RAISE;
                END IF;
                RETURN;
            WHEN SQLSTATE 'PS001' THEN
                GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
                RETURN QUERY SELECT 'short', NULL::uuid, detail::uuid, NULL::integer, NULL::jsonb;
                RETURN;
            WHEN foreign_key_violation THEN
                RETURN QUERY SELECT 'foreign_key', NULL::uuid, NULL::uuid, NULL::integer,
                                    to_jsonb(SQLERRM);
                RETURN;
            WHEN check_violation THEN
                RETURN QUERY SELECT 'check', NULL::uuid, NULL::uuid, NULL::integer,
                                    to_jsonb(SQLERRM);
                RETURN;
        END;
    END IF;
    RETURN QUERY SELECT 'created', p_id, NULL::uuid, NULL::integer, NULL::jsonb;
END
$$;
