-- A till sale in one round trip. posd keeps, per process, the products its
-- sales last read; a till sale whose products are all known there is
-- priced from them and written at once, without posd_sale_read. The write
-- then checks what pricing used against the catalog as it is: every
-- product exists, is not deleted, is for sale and has the sku, name, price,
-- tax rate and stock tracking the sale was priced with, and the customer
-- exists. Otherwise it answers 'stale' having written nothing (the key is
-- not claimed), and posd reads and prices again.
--
-- The sale's writes are now in posd_sale_write itself (posd_sale_record is
-- gone: a nested function call costs PostgreSQL more than its
-- statements), and an offline bill is written by posd_bill_write, which
-- runs posd_sale_write in a subtransaction.

DROP FUNCTION posd_sale_write(uuid, text, text, interval, integer, jsonb, uuid, text, uuid, uuid, uuid, text, boolean, bigint, bigint, bigint, bigint, bigint, bigint, bigint, text, timestamptz, timestamptz, integer[], uuid[], text[], text[], integer[], bigint[], integer[], bigint[], bigint[], bigint[], bigint[], uuid[], text[], bigint[], bigint[], text[], uuid[], bigint[], uuid[], boolean);
DROP FUNCTION posd_sale_record(uuid, uuid, text, uuid, uuid, uuid, text, boolean, bigint, bigint, bigint, bigint, bigint, bigint, bigint, text, timestamptz, timestamptz, integer[], uuid[], text[], text[], integer[], bigint[], integer[], bigint[], bigint[], bigint[], bigint[], uuid[], text[], bigint[], bigint[], text[], uuid[], bigint[], uuid[], boolean);

-- One sale, as one transaction when called on its own: binds the merchant,
-- checks the catalog as priced (c_price, c_tax, c_track: one entry per
-- line, or NULL when the sale was priced from posd_sale_read), claims the
-- idempotency key (if any) with the response stored at once, writes the
-- order, its lines and payments, then takes the stock (posd_stock_move: a
-- sale short of stock raises, which undoes everything the call wrote).
-- Answers one row:
--   created            the sale is written (order_id);
--   stale              the catalog or the customer is not as priced;
--                      nothing was written;
--   replay             the key holds this request's response (status, body);
--   mismatch           the key was used for another request;
--   in_flight          a request holding the key is still running.
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
    s_product uuid[], s_delta bigint[], s_movement uuid[], s_allow_negative boolean,
    c_price bigint[], c_tax integer[], c_track boolean[])
RETURNS TABLE (outcome text, order_id uuid, short_product uuid, response_status integer,
               response_body jsonb)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    claim record;
BEGIN
    PERFORM set_config('posd.merchant_id', p_merchant::text, true);
    IF c_price IS NOT NULL AND (
        EXISTS (SELECT 1
                  FROM unnest(l_product, l_sku, l_name, c_price, c_tax, c_track)
                       AS u(id, sku, name, price, tax, track)
                  LEFT JOIN products p ON p.merchant_id = p_merchant AND p.id = u.id
                                      AND p.deleted_at IS NULL
                 WHERE p.id IS NULL OR NOT p.active
                    OR (p.sku, p.name, p.price_minor, p.tax_rate_bps, p.track_stock)
                       IS DISTINCT FROM (u.sku, u.name, u.price, u.tax, u.track))
        OR (p_customer IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM customers c
                             WHERE c.merchant_id = p_merchant AND c.id = p_customer))) THEN
        RETURN QUERY SELECT 'stale', NULL::uuid, NULL::uuid, NULL::integer, NULL::jsonb;
        RETURN;
    END IF;
    IF p_key IS NOT NULL THEN
        SELECT * INTO claim FROM posd_claim(p_merchant, p_key, p_hash, p_retention, p_status, p_body);
        IF claim.outcome <> 'claimed' THEN
            RETURN QUERY SELECT claim.outcome, NULL::uuid, NULL::uuid, claim.response_status,
                                claim.response_body;
            RETURN;
        END IF;
    END IF;
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
    PERFORM posd_stock_move(p_merchant, s_product, s_delta, s_movement, s_allow_negative,
                            'sale', p_id, NULL, p_staff, NULL);
    RETURN QUERY SELECT 'created', p_id, NULL::uuid, NULL::integer, NULL::jsonb;
END
$$;

-- An offline bill (p_bill, the till's id for it), in the caller's
-- transaction: posd_sale_write in a subtransaction, so that a bill applied
-- by a concurrent batch or refused for its stock or a constraint leaves the
-- caller's batch going. Answers what posd_sale_write answers, or:
--   duplicate          the bill was applied already (order_id);
--   short              a product has no stock level (short_product);
--   foreign_key, check the bill broke that constraint (the message in
--                      response_body).
-- In each of these nothing of the bill was written.
CREATE OR REPLACE FUNCTION posd_bill_write(
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
    s_product uuid[], s_delta bigint[], s_movement uuid[], s_allow_negative boolean,
    c_price bigint[], c_tax integer[], c_track boolean[])
RETURNS TABLE (outcome text, order_id uuid, short_product uuid, response_status integer,
               response_body jsonb)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    detail text;
BEGIN
    RETURN QUERY SELECT * FROM posd_sale_write(p_merchant, p_key, p_hash, p_retention, p_status, p_body, p_id,
            p_source, p_bill, p_customer, p_staff, p_currency, p_prices_include_tax, p_gross,
            p_discount, p_tax, p_total, p_rounding, p_tendered, p_change, p_note, p_created_at,
            p_recorded_at, l_no, l_product, l_sku, l_name, l_quantity, l_unit, l_tax_rate,
            l_gross, l_discount, l_tax, l_total, pay_id, pay_method, pay_tendered, pay_amount,
            pay_reference, s_product, s_delta, s_movement, s_allow_negative, c_price, c_tax,
            c_track);
EXCEPTION
    WHEN unique_violation THEN
        RETURN QUERY SELECT 'duplicate', o.id, NULL::uuid, NULL::integer, NULL::jsonb
          FROM orders o WHERE o.merchant_id = p_merchant AND o.client_bill_id = p_bill;
        IF NOT FOUND THEN
            RAISE;
        END IF;
    WHEN SQLSTATE 'PS001' THEN
        GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
        RETURN QUERY SELECT 'short', NULL::uuid, detail::uuid, NULL::integer, NULL::jsonb;
    WHEN foreign_key_violation THEN
        RETURN QUERY SELECT 'foreign_key', NULL::uuid, NULL::uuid, NULL::integer,
                            to_jsonb(SQLERRM);
    WHEN check_violation THEN
        RETURN QUERY SELECT 'check', NULL::uuid, NULL::uuid, NULL::integer, to_jsonb(SQLERRM);
END
$$;
