ALTER TABLE provisioning_runs DROP COLUMN server_id;
DROP INDEX tenant_databases_server;
ALTER TABLE tenant_databases DROP COLUMN server_id;
DROP TABLE database_servers;
