-- Dedicated database servers registered by operators
-- (src/tenancy/servers.rs): posd creates a dedicated merchant's database on
-- one of them, or on the server of POSD_DEDICATED_SERVER_URL (`default`,
-- not a row: a database whose `server_id` is NULL is there, or is one the
-- merchant brought). SHARED (src/tenancy/classification.rs).
CREATE TABLE database_servers (
    id                 uuid PRIMARY KEY,
    name               text NOT NULL UNIQUE
                       CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$' AND name <> 'default'),
    -- the owner URL (a role with CREATEDB), sealed (AES-256-GCM, bound to the server)
    sealed_url         bytea NOT NULL,
    key_id             text NOT NULL,
    -- draining: no new database is placed there; the ones there stay
    status             text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'draining')),
    -- how many databases posd may create there
    capacity           integer NOT NULL CHECK (capacity > 0),
    -- connections each posd instance may hold to the databases there
    connection_budget  integer NOT NULL CHECK (connection_budget > 0),
    created_at         timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE tenant_databases ADD COLUMN server_id uuid REFERENCES database_servers (id);
CREATE INDEX tenant_databases_server ON tenant_databases (server_id) WHERE server_id IS NOT NULL;
-- The server a provisioning run creates its database on, chosen when the
-- run starts (a resumed run goes back to the same one).
ALTER TABLE provisioning_runs ADD COLUMN server_id uuid REFERENCES database_servers (id);
