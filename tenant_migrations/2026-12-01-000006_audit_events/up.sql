-- The merchant's audit trail: staff actions that matter to the merchant
-- (price changes, stock adjustments and counts, refunds, voids, settings
-- and staff changes, logins). It lives with the rest of the merchant's
-- data, so it moves with the merchant between tiers and is in its export.
-- Same rules as every tenant migration: unqualified names, merchant_id
-- first in every key, RLS enabled and forced with the fail-closed policy.
--
-- id is a UUIDv7 made by posd; `at` is the time of the writing
-- transaction. Listing is newest first by (at, id).

CREATE TABLE audit_events (
    merchant_id     uuid NOT NULL,
    id              uuid NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    -- the staff user who acted (NULL when there is none), and what they
    -- were (their role at the time)
    actor_staff_id  uuid,
    actor_label     text NOT NULL CHECK (length(actor_label) BETWEEN 1 AND 320),
    action          text NOT NULL CHECK (action IN (
                        'product_price_changed', 'stock_adjusted', 'stock_counted',
                        'order_refunded', 'order_voided',
                        'settings_changed', 'branding_changed',
                        'staff_created', 'staff_role_changed', 'staff_deactivated',
                        'staff_reactivated', 'login_succeeded', 'login_failed')),
    -- what was acted on (a product, an order, a staff user), as text
    subject         text CHECK (length(subject) <= 200),
    details         jsonb NOT NULL DEFAULT '{}',
    -- the request's X-Request-Id
    request_id      text CHECK (length(request_id) <= 128),
    PRIMARY KEY (merchant_id, id)
);
CREATE INDEX audit_events_newest ON audit_events (merchant_id, at DESC, id DESC);

ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_events
    USING (merchant_id = (SELECT NULLIF(current_setting('posd.merchant_id', true), '')::uuid))
    WITH CHECK (merchant_id = (SELECT NULLIF(current_setting('posd.merchant_id', true), '')::uuid));
