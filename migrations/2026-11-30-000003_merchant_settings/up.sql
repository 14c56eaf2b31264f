-- A merchant's settings and branding: only the values the merchant set,
-- keyed as the API names them (`cashRounding`). Defaults live in the code
-- (src/tenancy/settings.rs), so a new setting reaches every merchant
-- without a data migration. posd validates each value before storing it.
ALTER TABLE merchants
    ADD COLUMN settings jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT merchants_settings_object CHECK (jsonb_typeof(settings) = 'object'),
    ADD COLUMN branding jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT merchants_branding_object CHECK (jsonb_typeof(branding) = 'object');

-- Both are part of the cached tenant context: a change drops it on every
-- instance.
DROP TRIGGER merchants_context_changed ON merchants;
CREATE TRIGGER merchants_context_changed
    AFTER UPDATE OF slug, name, timezone, currency, plan, limit_overrides, settings, branding ON merchants
    FOR EACH ROW
    WHEN (ROW(OLD.slug, OLD.name, OLD.timezone, OLD.currency, OLD.plan, OLD.limit_overrides, OLD.settings, OLD.branding)
          IS DISTINCT FROM ROW(NEW.slug, NEW.name, NEW.timezone, NEW.currency, NEW.plan, NEW.limit_overrides, NEW.settings, NEW.branding))
    EXECUTE FUNCTION posd_notify_context();
