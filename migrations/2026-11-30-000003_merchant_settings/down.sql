DROP TRIGGER merchants_context_changed ON merchants;
CREATE TRIGGER merchants_context_changed
    AFTER UPDATE OF slug, name, timezone, currency, plan, limit_overrides ON merchants
    FOR EACH ROW
    WHEN (ROW(OLD.slug, OLD.name, OLD.timezone, OLD.currency, OLD.plan, OLD.limit_overrides)
          IS DISTINCT FROM ROW(NEW.slug, NEW.name, NEW.timezone, NEW.currency, NEW.plan, NEW.limit_overrides))
    EXECUTE FUNCTION posd_notify_context();
ALTER TABLE merchants
    DROP COLUMN branding,
    DROP COLUMN settings;
