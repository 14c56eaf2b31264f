-- Back to the sale write of tenant migration 7: no catalog check, the
-- sale's writes in posd_sale_record, offline bills in posd_sale_write.
DROP FUNCTION posd_bill_write(uuid, text, text, interval, integer, jsonb, uuid, text, uuid, uuid, uuid, text, boolean, bigint, bigint, bigint, bigint, bigint, bigint, bigint, text, timestamptz, timestamptz, integer[], uuid[], text[], text[], integer[], bigint[], integer[], bigint[], bigint[], bigint[], bigint[], uuid[], text[], bigint[], bigint[], text[], uuid[], bigint[], uuid[], boolean, bigint[], integer[], boolean[]);
DROP FUNCTION posd_sale_write(uuid, text, text, interval, integer, jsonb, uuid, text, uuid, uuid, uuid, text, boolean, bigint, bigint, bigint, bigint, bigint, bigint, bigint, text, timestamptz, timestamptz, integer[], uuid[], text[], text[], integer[], bigint[], integer[], bigint[], bigint[], bigint[], bigint[], uuid[], text[], bigint[], bigint[], text[], uuid[], bigint[], uuid[], boolean, bigint[], integer[], boolean[]);

-- The writes of one sale, in the caller's transaction: the order, its lines
-- and payments, then the stock (posd_stock_move: a sale short of stock
-- raises, which undoes everything the call wrote).
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
    PERFORM posd_stock_move(p_merchant, s_product, s_delta, s_movement, s_allow_negative,
                            'sale', p_id, NULL, p_staff, NULL);
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
    claim record;
    detail text;
BEGIN
    PERFORM set_config('posd.merchant_id', p_merchant::text, true);
    IF p_key IS NOT NULL THEN
        SELECT * INTO claim FROM posd_claim(p_merchant, p_key, p_hash, p_retention, p_status, p_body);
        IF claim.outcome <> 'claimed' THEN
            RETURN QUERY SELECT claim.outcome, NULL::uuid, NULL::uuid, claim.response_status,
                                claim.response_body;
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
