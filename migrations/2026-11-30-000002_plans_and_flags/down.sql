DROP TABLE merchant_flag_overrides;
DROP TABLE feature_flags;
DROP TRIGGER merchants_context_changed ON merchants;
DROP INDEX merchants_plan;
ALTER TABLE merchants
    DROP COLUMN limit_overrides,
    DROP CONSTRAINT merchants_plan_fk,
    ALTER COLUMN plan DROP DEFAULT;
DROP FUNCTION posd_limit_overrides_valid(jsonb);
DROP TABLE plans;
DROP FUNCTION posd_notify_context();
