DROP FUNCTION posd_tenant_versions(text[]);
DROP TABLE tenant_migration_runs;
DROP TABLE tenant_migration_state;
