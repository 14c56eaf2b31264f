-- Control plane: merchants and their placement, staff, tenant database
-- registry, provisioning runs, admin audit. Every table here is SHARED
-- (src/tenancy/classification.rs).

CREATE TABLE merchants (
    id           uuid PRIMARY KEY,
    slug         text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    timezone     text NOT NULL,
    currency     text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    plan         text NOT NULL,
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    -- placement: where the merchant's data plane lives
    tier         text NOT NULL DEFAULT 'shared' CHECK (tier IN ('shared', 'schema', 'dedicated')),
    schema_name  text NOT NULL DEFAULT 'tenant_shared',
    database_id  uuid,
    generation   bigint NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((tier = 'dedicated') = (database_id IS NOT NULL))
);

CREATE TABLE tenant_databases (
    id               uuid PRIMARY KEY,
    merchant_id      uuid NOT NULL REFERENCES merchants (id),
    database_name    text NOT NULL,
    -- the connection URL, sealed (AES-256-GCM, bound to merchant and purpose)
    sealed_url       bytea NOT NULL,
    key_id           text NOT NULL,
    created_by_posd  boolean NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_databases_merchant ON tenant_databases (merchant_id);

ALTER TABLE merchants
    ADD CONSTRAINT merchants_database_fk FOREIGN KEY (database_id) REFERENCES tenant_databases (id);

CREATE TABLE staff_users (
    id             uuid PRIMARY KEY,
    merchant_id    uuid NOT NULL REFERENCES merchants (id),
    email          text NOT NULL CHECK (email = lower(email)),
    password_hash  text NOT NULL,
    role           text NOT NULL CHECK (role IN ('owner', 'manager', 'cashier')),
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, email)
);

CREATE TABLE provisioning_runs (
    id           uuid PRIMARY KEY,
    merchant_id  uuid NOT NULL REFERENCES merchants (id),
    target_tier  text NOT NULL CHECK (target_tier IN ('schema', 'dedicated')),
    status       text NOT NULL CHECK (status IN ('pending', 'creating', 'migrating', 'ready', 'failed')),
    failed_step  text,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provisioning_runs_merchant ON provisioning_runs (merchant_id, created_at);

CREATE TABLE admin_audit (
    id           bigserial PRIMARY KEY,
    actor        text NOT NULL,
    action       text NOT NULL,
    merchant_id  uuid,
    details      jsonb NOT NULL DEFAULT '{}',
    at           timestamptz NOT NULL DEFAULT now()
);

-- Every posd instance LISTENs on posd_placement and drops its cached
-- placement for the merchant named in the payload.
CREATE FUNCTION posd_notify_placement() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('posd_placement', NEW.id::text);
    RETURN NEW;
END
$$;

CREATE TRIGGER merchants_placement_changed
    AFTER UPDATE OF status, tier, schema_name, database_id, generation ON merchants
    FOR EACH ROW
    WHEN (ROW(OLD.status, OLD.tier, OLD.schema_name, OLD.database_id, OLD.generation)
          IS DISTINCT FROM ROW(NEW.status, NEW.tier, NEW.schema_name, NEW.database_id, NEW.generation))
    EXECUTE FUNCTION posd_notify_placement();
