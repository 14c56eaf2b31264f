DROP TABLE tenant_exports;
ALTER TABLE provisioning_runs
    DROP CONSTRAINT provisioning_runs_byo_dedicated,
    DROP COLUMN error_code,
    DROP COLUMN step,
    DROP COLUMN byo;
