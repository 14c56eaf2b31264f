-- Durable, idempotent provisioning runs (a client may choose the run id and
-- repeat a call), bring-your-own databases, and the record of tenant
-- exports that deprovisioning requires. Every table here is SHARED.

ALTER TABLE provisioning_runs
    -- the database was brought by the merchant (databaseUrl), not created by posd
    ADD COLUMN byo         boolean NOT NULL DEFAULT false,
    -- the step being run, or the last one run
    ADD COLUMN step        text,
    -- a stable, machine-readable reason for a failure
    ADD COLUMN error_code  text;

ALTER TABLE provisioning_runs
    ADD CONSTRAINT provisioning_runs_byo_dedicated CHECK (NOT byo OR target_tier = 'dedicated');

-- One row per completed export of a merchant's data plane. Deprovisioning
-- drops a schema or a posd-created database only when one exists (or when
-- forced).
CREATE TABLE tenant_exports (
    id            uuid PRIMARY KEY,
    merchant_id   uuid NOT NULL REFERENCES merchants (id),
    tier          text NOT NULL CHECK (tier IN ('shared', 'schema', 'dedicated')),
    requested_by  text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_exports_merchant ON tenant_exports (merchant_id, created_at);
