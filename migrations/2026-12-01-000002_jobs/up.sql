-- Background jobs (src/tenancy/jobs.rs): a durable queue in the control
-- plane, worked by every serving posd with `FOR UPDATE SKIP LOCKED`. Every
-- job belongs to one merchant and records the placement generation it was
-- enqueued under: a job whose merchant moved since is re-resolved, never
-- run against the old placement. SHARED (src/tenancy/classification.rs).
CREATE TABLE jobs (
    id            uuid PRIMARY KEY,
    merchant_id   uuid NOT NULL REFERENCES merchants (id) ON DELETE CASCADE,
    generation    bigint NOT NULL CHECK (generation >= 1),
    kind          text NOT NULL CHECK (kind IN ('daily_summary', 'expire_idempotency_keys', 'export')),
    args          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(args) = 'object'),
    -- at most one job per key: a scheduled job's kind, merchant and day
    dedupe_key    text UNIQUE,
    -- queued (waiting or due), done, or dead (out of attempts: a dead letter)
    status        text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'done', 'dead')),
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts  integer NOT NULL CHECK (max_attempts >= 1),
    run_at        timestamptz NOT NULL DEFAULT now(),
    -- the last failure
    error_code    text,
    error         text,
    -- what the last successful run produced
    result        jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    CHECK ((status = 'queued') = (finished_at IS NULL))
);
CREATE INDEX jobs_due ON jobs (run_at) WHERE status = 'queued';
CREATE INDEX jobs_created ON jobs (created_at, id);
CREATE INDEX jobs_merchant ON jobs (merchant_id, created_at, id);
CREATE INDEX jobs_finished ON jobs (status, finished_at) WHERE status <> 'queued';

-- Each merchant's figures for each business day that closed, written by
-- the `daily_summary` job: the seed of reporting and billing. SHARED.
CREATE TABLE merchant_daily_summaries (
    merchant_id        uuid NOT NULL REFERENCES merchants (id) ON DELETE CASCADE,
    day                date NOT NULL,
    currency           text NOT NULL,
    order_count        bigint NOT NULL,
    voided_count       bigint NOT NULL,
    late_order_count   bigint NOT NULL,
    gross_sales_minor  bigint NOT NULL,
    discounts_minor    bigint NOT NULL,
    tax_minor          bigint NOT NULL,
    sales_minor        bigint NOT NULL,
    rounding_minor     bigint NOT NULL,
    refunds_minor      bigint NOT NULL,
    refund_count       bigint NOT NULL,
    net_minor          bigint NOT NULL,
    computed_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, day)
);
