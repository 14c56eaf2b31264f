-- posd's writes in the fewest round trips. Each write path is a read, then
-- pricing or the business rules in Rust, then one write; each step is one
-- call of a function below, and each call is a transaction of its own (no
-- BEGIN, no COMMIT sent):
--
--   sale             posd_sale_read, posd_sale_write
--   refund, void     posd_order_read, posd_order_change
--   stock adjustment posd_stock_read, posd_stock_adjust
--
-- A read binds the merchant and answers what the rules need, including
-- what the request's idempotency key holds. A write binds the merchant,
-- checks that what it changes is as read ('stale' otherwise, and the
-- caller reads again), claims the idempotency key with the response
-- already in it, and writes; all or nothing. An offline batch calls the
-- sale functions inside its own transaction.
--
-- All are SECURITY INVOKER (the service's role, row-level security
-- applies) and pin search_path to this schema: whoever calls them reaches
-- this schema's tables only, and the binding (posd.merchant_id) is set
-- inside the call's own transaction before any table is touched. They are
-- tenant migrations, so they are versioned with the tables they write,
-- installed on every tier and on a merchant's new placement. posd_claim,
-- posd_stock_move, posd_sale_record and posd_order_unchanged are their
-- parts and bind nothing themselves.

-- Claims idempotency key p_key for a request hashing to p_hash, with its
-- response stored at once, in the caller's transaction: taken only if no
-- other transaction holds the key's lock (a duplicate in flight is told so
-- at once instead of waiting), and if the key is free, expired, or left
-- without a response by the same request. Answers 'claimed', or what the
-- key holds: 'replay' (with the response), 'mismatch' or 'in_flight'.
CREATE OR REPLACE FUNCTION posd_claim(
    p_merchant uuid, p_key text, p_hash text, p_retention interval,
    p_status integer, p_body jsonb)
RETURNS TABLE (outcome text, response_status integer, response_body jsonb)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    claimed boolean;
    stored_hash text;
    stored_status integer;
    stored_body jsonb;
BEGIN
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
    IF claimed THEN
        RETURN QUERY SELECT 'claimed', NULL::integer, NULL::jsonb;
        RETURN;
    END IF;
    SELECT k.request_hash, k.response_status, k.response_body
      INTO stored_hash, stored_status, stored_body
      FROM idempotency_keys k
     WHERE k.merchant_id = p_merchant AND k.key = p_key AND k.expires_at >= now();
    RETURN QUERY SELECT
        CASE WHEN stored_hash IS NOT NULL AND stored_hash <> p_hash THEN 'mismatch'
             WHEN stored_status IS NOT NULL AND stored_body IS NOT NULL THEN 'replay'
             ELSE 'in_flight' END,
        stored_status, stored_body;
END
$$;

-- Moves the stock of each product in s_product by its s_delta and records
-- one movement each (ids s_movement), in the caller's transaction. Levels
-- are locked in product id order, so concurrent changes cannot deadlock.
-- A level that would go below zero, unless allowed, or a product with no
-- level, raises 'posd: insufficient stock' (SQLSTATE PS001) with the
-- product id as DETAIL, which undoes the caller's writes. Answers the new
-- levels. (One simple UPDATE per product: PostgreSQL plans it once per
-- session, where a single statement over all products was planned again
-- at every call.)
CREATE OR REPLACE FUNCTION posd_stock_move(
    p_merchant uuid, s_product uuid[], s_delta bigint[], s_movement uuid[],
    p_allow_negative boolean, p_reason text, p_order uuid, p_refund uuid, p_staff uuid,
    p_note text)
RETURNS TABLE (product_id uuid, on_hand bigint)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    i integer;
    level bigint;
BEGIN
    FOR i IN SELECT u.o FROM unnest(s_product) WITH ORDINALITY AS u(p, o) ORDER BY u.p LOOP
        UPDATE inventory_levels l
           SET on_hand = l.on_hand + s_delta[i],
               needs_count = l.needs_count OR l.on_hand + s_delta[i] < 0,
               updated_at = now()
         WHERE l.merchant_id = p_merchant AND l.product_id = s_product[i]
        RETURNING l.on_hand INTO level;
        IF NOT FOUND OR (level < 0 AND NOT p_allow_negative) THEN
            RAISE EXCEPTION 'posd: insufficient stock'
                USING ERRCODE = 'PS001', DETAIL = s_product[i]::text;
        END IF;
        product_id := s_product[i];
        on_hand := level;
        RETURN NEXT;
    END LOOP;
    INSERT INTO stock_movements (merchant_id, id, product_id, delta, reason, order_id,
        refund_id, staff_id, note)
    SELECT p_merchant, u.movement_id, u.product_id, u.delta, p_reason, p_order, p_refund,
           p_staff, p_note
      FROM unnest(s_product, s_delta, s_movement) AS u(product_id, delta, movement_id);
END
$$;

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
    IF p_key IS NOT NULL THEN
        RETURN QUERY
            SELECT 'key', NULL::uuid, NULL::text, NULL::text, NULL::bigint, NULL::integer,
                   NULL::boolean, NULL::boolean, k.request_hash, k.response_status,
                   k.response_body
              FROM idempotency_keys k
             WHERE k.merchant_id = p_merchant AND k.key = p_key AND k.expires_at >= now();
    END IF;
    IF p_customer IS NOT NULL THEN
        RETURN QUERY
            SELECT 'customer', c.id, NULL::text, NULL::text, NULL::bigint, NULL::integer,
                   NULL::boolean, NULL::boolean, NULL::text, NULL::integer, NULL::jsonb
              FROM customers c
             WHERE c.merchant_id = p_merchant AND c.id = p_customer;
    END IF;
    IF p_bill IS NOT NULL THEN
        RETURN QUERY
            SELECT 'bill', o.id, NULL::text, NULL::text, NULL::bigint, NULL::integer,
                   NULL::boolean, NULL::boolean, NULL::text, NULL::integer, NULL::jsonb
              FROM orders o
             WHERE o.merchant_id = p_merchant AND o.client_bill_id = p_bill;
    END IF;
    IF p_at IS NULL THEN
        RETURN QUERY
            SELECT 'product', p.id, p.sku, p.name, p.price_minor, p.tax_rate_bps, p.active,
                   p.track_stock, NULL::text, NULL::integer, NULL::jsonb
              FROM products p
             WHERE p.merchant_id = p_merchant AND p.id = ANY (p_products)
               AND p.deleted_at IS NULL;
    ELSE
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
                     LIMIT 1) v ON true
             WHERE p.merchant_id = p_merchant AND p.id = ANY (p_products)
               AND p.deleted_at IS NULL;
    END IF;
END
$$;

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

-- An order as a refund or a void needs it, in one call: binds the merchant,
-- then answers a row per part, each as the table's row in JSON: what the
-- idempotency key p_key holds ('key'), the order ('order'), its lines
-- ('line', with the product's track_stock), payments ('payment'), refunds
-- ('refund') and refund lines ('refund_line').
CREATE OR REPLACE FUNCTION posd_order_read(p_merchant uuid, p_key text, p_order uuid)
RETURNS TABLE (kind text, item jsonb)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM set_config('posd.merchant_id', p_merchant::text, true);
    RETURN QUERY
        SELECT 'key', jsonb_build_object('request_hash', k.request_hash,
                                         'response_status', k.response_status,
                                         'response_body', k.response_body)
          FROM idempotency_keys k
         WHERE p_key IS NOT NULL AND k.merchant_id = p_merchant AND k.key = p_key
           AND k.expires_at >= now();
    RETURN QUERY
        SELECT 'order', to_jsonb(o) FROM orders o
         WHERE o.merchant_id = p_merchant AND o.id = p_order;
    RETURN QUERY
        SELECT 'line', to_jsonb(l) || jsonb_build_object('track_stock', coalesce(p.track_stock, false))
          FROM order_lines l
          LEFT JOIN products p ON p.merchant_id = l.merchant_id AND p.id = l.product_id
         WHERE l.merchant_id = p_merchant AND l.order_id = p_order
         ORDER BY l.line_no;
    RETURN QUERY
        SELECT 'payment', to_jsonb(x) FROM payments x
         WHERE x.merchant_id = p_merchant AND x.order_id = p_order ORDER BY x.id;
    RETURN QUERY
        SELECT 'refund', to_jsonb(r) FROM refunds r
         WHERE r.merchant_id = p_merchant AND r.order_id = p_order ORDER BY r.id;
    RETURN QUERY
        SELECT 'refund_line', to_jsonb(rl) FROM refund_lines rl
         WHERE rl.merchant_id = p_merchant AND rl.order_id = p_order
         ORDER BY rl.refund_id, rl.line_no;
END
$$;

-- Locks order p_order and checks it is as the caller read it (its status
-- and refunded total: every refund and void changes one of them). Answers
-- false, having written nothing, when it changed or is gone.
CREATE OR REPLACE FUNCTION posd_order_unchanged(
    p_merchant uuid, p_order uuid, p_seen_status text, p_seen_refunded bigint)
RETURNS boolean
LANGUAGE sql SET search_path FROM CURRENT AS $$
    SELECT coalesce((SELECT o.status = p_seen_status AND o.refunded_minor = p_seen_refunded
                       FROM orders o
                      WHERE o.merchant_id = p_merchant AND o.id = p_order
                        FOR UPDATE), false)
$$;

-- A refund or a void of an order, as one transaction: binds the merchant,
-- locks the order and checks it is as read ('stale' otherwise: read again),
-- claims the idempotency key with the response, then writes: for a refund
-- (r_id set) the refund, its lines, the lines' and the order's refunded
-- amounts and the order's status p_status_after; for a void (r_id NULL)
-- the order voided at p_at; then the stock put back (never refused for
-- going below zero; a product without a level raises PS001) and the audit
-- event. Answers 'done', or what the key holds ('replay', 'mismatch',
-- 'in_flight'), or 'stale'.
CREATE OR REPLACE FUNCTION posd_order_change(
    p_merchant uuid, p_key text, p_hash text, p_retention interval,
    p_status integer, p_body jsonb,
    p_order uuid, p_seen_status text, p_seen_refunded bigint,
    p_status_after text, p_refunded_after bigint, p_at timestamptz, p_staff uuid,
    r_id uuid, r_amount bigint, r_method text, r_restock boolean, r_reason text,
    rl_line_no integer[], rl_quantity integer[], rl_amount bigint[],
    s_product uuid[], s_delta bigint[], s_movement uuid[],
    a_id uuid, a_actor uuid, a_label text, a_action text, a_details jsonb, a_request_id text)
RETURNS TABLE (outcome text, response_status integer, response_body jsonb)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    claim record;
BEGIN
    PERFORM set_config('posd.merchant_id', p_merchant::text, true);
    IF NOT posd_order_unchanged(p_merchant, p_order, p_seen_status, p_seen_refunded) THEN
        RETURN QUERY SELECT 'stale', NULL::integer, NULL::jsonb;
        RETURN;
    END IF;
    SELECT * INTO claim FROM posd_claim(p_merchant, p_key, p_hash, p_retention, p_status, p_body);
    IF claim.outcome <> 'claimed' THEN
        RETURN QUERY SELECT claim.outcome, claim.response_status, claim.response_body;
        RETURN;
    END IF;
    IF r_id IS NOT NULL THEN
        INSERT INTO refunds (merchant_id, id, order_id, amount_minor, method, restock, reason,
            staff_id, created_at)
        VALUES (p_merchant, r_id, p_order, r_amount, r_method, r_restock, r_reason, p_staff, p_at);
        INSERT INTO refund_lines (merchant_id, refund_id, order_id, line_no, quantity, amount_minor)
        SELECT p_merchant, r_id, p_order, u.line_no, u.quantity, u.amount
          FROM unnest(rl_line_no, rl_quantity, rl_amount) AS u(line_no, quantity, amount);
        UPDATE order_lines l
           SET refunded_quantity = l.refunded_quantity + u.quantity,
               refunded_minor = l.refunded_minor + u.amount
          FROM unnest(rl_line_no, rl_quantity, rl_amount) AS u(line_no, quantity, amount)
         WHERE l.merchant_id = p_merchant AND l.order_id = p_order AND l.line_no = u.line_no;
        UPDATE orders o SET refunded_minor = p_refunded_after, status = p_status_after
         WHERE o.merchant_id = p_merchant AND o.id = p_order;
    ELSE
        UPDATE orders o SET status = p_status_after, voided_at = p_at
         WHERE o.merchant_id = p_merchant AND o.id = p_order;
    END IF;
    PERFORM posd_stock_move(p_merchant, s_product, s_delta, s_movement, true,
                            CASE WHEN r_id IS NULL THEN 'void' ELSE 'refund' END,
                            p_order, r_id, p_staff, NULL);
    INSERT INTO audit_events (merchant_id, id, actor_staff_id, actor_label, action, subject,
        details, request_id)
    VALUES (p_merchant, a_id, a_actor, a_label, a_action, p_order::text, a_details, a_request_id);
    RETURN QUERY SELECT 'done', NULL::integer, NULL::jsonb;
END
$$;

-- A product's stock level, for an adjustment: binds the merchant; no row
-- when the product does not exist (or is deleted), NULL when it has no
-- level.
CREATE OR REPLACE FUNCTION posd_stock_read(p_merchant uuid, p_product uuid)
RETURNS TABLE (on_hand bigint)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM set_config('posd.merchant_id', p_merchant::text, true);
    RETURN QUERY
        SELECT l.on_hand
          FROM products p
          LEFT JOIN inventory_levels l ON l.merchant_id = p.merchant_id AND l.product_id = p.id
         WHERE p.merchant_id = p_merchant AND p.id = p_product AND p.deleted_at IS NULL;
END
$$;

-- A stock adjustment, as one transaction: binds the merchant, locks the
-- product's level and checks it is as read (p_seen; 'stale' otherwise),
-- moves it by p_delta (never below zero: 'short'), clears the count flag
-- for a count, records the audit event. Answers 'done' with the new level.
CREATE OR REPLACE FUNCTION posd_stock_adjust(
    p_merchant uuid, p_product uuid, p_seen bigint, p_delta bigint, p_reason text,
    p_movement uuid, p_staff uuid, p_note text,
    a_id uuid, a_actor uuid, a_label text, a_action text, a_details jsonb, a_request_id text)
RETURNS TABLE (outcome text, on_hand bigint)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    current bigint;
BEGIN
    PERFORM set_config('posd.merchant_id', p_merchant::text, true);
    SELECT l.on_hand INTO current FROM inventory_levels l
     WHERE l.merchant_id = p_merchant AND l.product_id = p_product
       FOR UPDATE;
    IF current IS DISTINCT FROM p_seen THEN
        RETURN QUERY SELECT 'stale', current;
        RETURN;
    END IF;
    IF current + p_delta < 0 THEN
        RETURN QUERY SELECT 'short', current;
        RETURN;
    END IF;
    IF p_delta <> 0 THEN
        PERFORM posd_stock_move(p_merchant, ARRAY[p_product], ARRAY[p_delta], ARRAY[p_movement],
                                false, p_reason, NULL, NULL, p_staff, p_note);
    END IF;
    IF p_reason = 'count' THEN
        UPDATE inventory_levels l SET needs_count = false
         WHERE l.merchant_id = p_merchant AND l.product_id = p_product;
    END IF;
    INSERT INTO audit_events (merchant_id, id, actor_staff_id, actor_label, action, subject,
        details, request_id)
    VALUES (p_merchant, a_id, a_actor, a_label, a_action, p_product::text, a_details, a_request_id);
    RETURN QUERY SELECT 'done', current + p_delta;
END
$$;
