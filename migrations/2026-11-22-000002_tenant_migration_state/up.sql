-- Where each schema or dedicated tenant stands with tenant_migrations/, and
-- the fleet runs that move them. Both SHARED.

CREATE TABLE tenant_migration_state (
    merchant_id  uuid PRIMARY KEY REFERENCES merchants (id),
    version      text,
    status       text NOT NULL CHECK (status IN ('ok', 'failed')),
    error        text,
    duration_ms  bigint NOT NULL DEFAULT 0,
    run_id       uuid,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenant_migration_runs (
    id              uuid PRIMARY KEY,
    requested_by    text NOT NULL,
    target_version  text NOT NULL,
    dry_run         boolean NOT NULL,
    total           integer NOT NULL DEFAULT 0,
    migrated        integer NOT NULL DEFAULT 0,
    failed          integer NOT NULL DEFAULT 0,
    skipped         integer NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

-- The newest applied tenant migration of each schema, in one round trip
-- (NULL where a schema has no migration table).
CREATE FUNCTION posd_tenant_versions(schemas text[])
RETURNS TABLE (schema_name text, version text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s text;
BEGIN
    FOREACH s IN ARRAY schemas LOOP
        schema_name := s;
        BEGIN
            EXECUTE format('SELECT max(version)::text FROM %I.__diesel_schema_migrations', s)
                INTO version;
        EXCEPTION WHEN undefined_table OR invalid_schema_name THEN
            version := NULL;
        END;
        RETURN NEXT;
    END LOOP;
END
$$;
