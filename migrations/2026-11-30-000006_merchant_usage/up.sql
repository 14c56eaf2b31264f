-- What each merchant used per UTC day, for operators and billing. The
-- counters are added to by every posd instance in batches (each adds its
-- own counts, so several instances sum correctly); the storage gauges are
-- set by the periodic measuring pass, NULL until it has run that day.
-- SHARED (src/tenancy/classification.rs).
CREATE TABLE merchant_usage (
    merchant_id   uuid NOT NULL REFERENCES merchants (id) ON DELETE CASCADE,
    day           date NOT NULL,
    api_calls     bigint NOT NULL DEFAULT 0 CHECK (api_calls >= 0),
    orders        bigint NOT NULL DEFAULT 0 CHECK (orders >= 0),
    db_time_us    bigint NOT NULL DEFAULT 0 CHECK (db_time_us >= 0),
    rows_stored   bigint CHECK (rows_stored >= 0),
    bytes_stored  bigint CHECK (bytes_stored >= 0),
    PRIMARY KEY (merchant_id, day)
);
