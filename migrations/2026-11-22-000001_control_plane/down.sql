DROP TRIGGER merchants_placement_changed ON merchants;
DROP FUNCTION posd_notify_placement();
DROP TABLE admin_audit;
DROP TABLE provisioning_runs;
DROP TABLE staff_users;
ALTER TABLE merchants DROP CONSTRAINT merchants_database_fk;
DROP TABLE tenant_databases;
DROP TABLE merchants;
