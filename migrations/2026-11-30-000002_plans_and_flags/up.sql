-- Plans with the limits posd enforces, per-merchant limit overrides, and
-- feature flags with plan gates, rollouts and per-merchant overrides.
-- Every table here is SHARED (src/tenancy/classification.rs).

-- A plan's limits; NULL is unlimited. `rank` orders plans for feature
-- flags' plan gates (a flag with min_plan 'pro' is on for every plan
-- ranked at least as high as 'pro').
CREATE TABLE plans (
    key                  text PRIMARY KEY CHECK (key ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name                 text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    rank                 integer NOT NULL,
    max_staff            bigint CHECK (max_staff >= 0),
    max_products         bigint CHECK (max_products >= 0),
    requests_per_minute  bigint CHECK (requests_per_minute >= 0),
    max_storage_bytes    bigint CHECK (max_storage_bytes >= 0),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

INSERT INTO plans (key, name, rank, max_staff, max_products, requests_per_minute, max_storage_bytes) VALUES
    ('starter',    'Starter',    10,    5,  1000,  600,  1073741824),
    ('pro',        'Pro',        20,   50, 20000, 6000, 21474836480),
    ('enterprise', 'Enterprise', 30, NULL,  NULL, NULL,        NULL);

-- Merchants made before plans existed keep the plan text they were given
-- (`standard` by default): each such value becomes a plan of its own,
-- without limits, so that nothing they could do before is refused now.
-- An operator moves them onto a real plan when ready.
INSERT INTO plans (key, name, rank)
SELECT DISTINCT plan, plan, 0 FROM merchants
 WHERE plan NOT IN (SELECT key FROM plans)
   AND plan ~ '^[a-z0-9][a-z0-9_-]{0,63}$';
UPDATE merchants SET plan = 'starter' WHERE plan NOT IN (SELECT key FROM plans);

-- Whether `o` is a valid set of limit overrides: an object whose keys are
-- limit names and whose values are null (unlimited) or a whole number
-- >= 0. A key that is absent follows the plan.
CREATE FUNCTION posd_limit_overrides_valid(o jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(o) <> 'object' THEN false
           ELSE NOT EXISTS (
               SELECT 1 FROM jsonb_each(o) AS e(k, v)
                WHERE k NOT IN ('max_staff', 'max_products', 'requests_per_minute', 'max_storage_bytes')
                   OR NOT (jsonb_typeof(v) = 'null'
                           OR (jsonb_typeof(v) = 'number'
                               AND v::numeric >= 0
                               AND v::numeric <= 9223372036854775807
                               AND v::numeric = trunc(v::numeric))))
           END
$$;

ALTER TABLE merchants
    ALTER COLUMN plan SET DEFAULT 'starter',
    ADD CONSTRAINT merchants_plan_fk FOREIGN KEY (plan) REFERENCES plans (key) ON UPDATE CASCADE,
    -- Per-merchant limits that replace the plan's: {"max_staff": 12,
    -- "max_products": null}. A key present with null is unlimited; an
    -- absent key follows the plan.
    ADD COLUMN limit_overrides jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT merchants_limit_overrides_valid CHECK (posd_limit_overrides_valid(limit_overrides));
CREATE INDEX merchants_plan ON merchants (plan);

-- A flag is on for a merchant by, in this order: the merchant's override;
-- else off when the merchant's plan ranks below min_plan; else, when
-- rollout_percent is set, on for that share of merchants (a stable hash of
-- the flag and the merchant id); else default_on.
CREATE TABLE feature_flags (
    key              text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_]{0,63}$'),
    description      text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    default_on       boolean NOT NULL DEFAULT false,
    min_plan         text REFERENCES plans (key) ON UPDATE CASCADE,
    rollout_percent  smallint CHECK (rollout_percent BETWEEN 0 AND 100),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

INSERT INTO feature_flags (key, description, default_on) VALUES
    ('offline_bills', 'Tills may send bills recorded while offline (POST /offline-bills).', true);

CREATE TABLE merchant_flag_overrides (
    merchant_id  uuid NOT NULL REFERENCES merchants (id) ON DELETE CASCADE,
    flag         text NOT NULL REFERENCES feature_flags (key) ON UPDATE CASCADE ON DELETE CASCADE,
    enabled      boolean NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, flag)
);
CREATE INDEX merchant_flag_overrides_flag ON merchant_flag_overrides (flag);

-- Every posd instance LISTENs on posd_context and drops its cached tenant
-- context of the merchant named in the payload, or every one for `*` (a
-- plan or a flag changed).
CREATE FUNCTION posd_notify_context() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'merchants' THEN
        PERFORM pg_notify('posd_context', NEW.id::text);
    ELSIF TG_TABLE_NAME = 'merchant_flag_overrides' THEN
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('posd_context', OLD.merchant_id::text);
        ELSE
            PERFORM pg_notify('posd_context', NEW.merchant_id::text);
        END IF;
    ELSE
        PERFORM pg_notify('posd_context', '*');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER merchants_context_changed
    AFTER UPDATE OF slug, name, timezone, currency, plan, limit_overrides ON merchants
    FOR EACH ROW
    WHEN (ROW(OLD.slug, OLD.name, OLD.timezone, OLD.currency, OLD.plan, OLD.limit_overrides)
          IS DISTINCT FROM ROW(NEW.slug, NEW.name, NEW.timezone, NEW.currency, NEW.plan, NEW.limit_overrides))
    EXECUTE FUNCTION posd_notify_context();

CREATE TRIGGER plans_changed
    AFTER UPDATE OR DELETE ON plans
    FOR EACH STATEMENT
    EXECUTE FUNCTION posd_notify_context();

CREATE TRIGGER feature_flags_changed
    AFTER INSERT OR UPDATE OR DELETE ON feature_flags
    FOR EACH STATEMENT
    EXECUTE FUNCTION posd_notify_context();

CREATE TRIGGER merchant_flag_overrides_changed
    AFTER INSERT OR UPDATE OR DELETE ON merchant_flag_overrides
    FOR EACH ROW
    EXECUTE FUNCTION posd_notify_context();
