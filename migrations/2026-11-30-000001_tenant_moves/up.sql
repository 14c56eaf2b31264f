-- Live tier moves (src/tenancy/moves/): one row per move of a merchant's
-- data plane from one placement to another. SHARED.

CREATE TABLE tenant_moves (
    id                  uuid PRIMARY KEY,
    merchant_id         uuid NOT NULL REFERENCES merchants (id),
    -- where the data was when the move started, and where it goes
    source_tier         text NOT NULL CHECK (source_tier IN ('shared', 'schema', 'dedicated')),
    source_schema       text NOT NULL,
    -- the source's registry row (kept until cleanup, so not a foreign key)
    source_database_id  uuid,
    target_tier         text NOT NULL CHECK (target_tier IN ('shared', 'schema', 'dedicated')),
    target_schema       text NOT NULL,
    -- a dedicated target's registry row, written when the move starts; it
    -- becomes the merchant's placement only at the flip (dropped with the
    -- target when the move fails, so not a foreign key)
    target_database_id  uuid,
    phase               text NOT NULL CHECK (phase IN ('prepare', 'capture', 'copy', 'catch_up', 'verify',
                                                       'fence', 'retire', 'retained', 'cleaned')),
    status              text NOT NULL CHECK (status IN ('running', 'cancelling', 'done', 'failed', 'cancelled')),
    -- per table: rows copied, rows in the snapshot, and (after verify) the checksum both sides agree on
    tables              jsonb NOT NULL DEFAULT '[]',
    -- changes captured at the source and not yet applied at the target
    backlog             bigint NOT NULL DEFAULT 0,
    rounds              integer NOT NULL DEFAULT 0,
    -- how long the merchant's writes were held at the flip
    fence_ms            integer,
    -- milliseconds spent in each phase
    phase_ms            jsonb NOT NULL DEFAULT '{}',
    error_code          text,
    error               text,
    -- where the source is kept after the flip, until cleanup
    retired_as          text,
    retain_until        timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    flipped_at          timestamptz,
    finished_at         timestamptz,
    CHECK ((source_tier = 'dedicated') = (source_database_id IS NOT NULL)),
    CHECK ((target_tier = 'dedicated') = (target_database_id IS NOT NULL))
);
CREATE INDEX tenant_moves_merchant ON tenant_moves (merchant_id, created_at);
-- One move per merchant at a time.
CREATE UNIQUE INDEX tenant_moves_one_active ON tenant_moves (merchant_id)
    WHERE status IN ('running', 'cancelling');
