-- The custom domains a merchant is reached at (besides <slug>.<base
-- domain>): lower-case DNS names whose last label starts with a letter
-- (config::is_dns_name). A domain routes only once an operator has
-- verified it (verified_at). SHARED (src/tenancy/classification.rs).
CREATE TABLE merchant_domains (
    domain       text PRIMARY KEY CHECK (
        length(domain) <= 253
        AND domain ~ '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$'),
    merchant_id  uuid NOT NULL REFERENCES merchants (id) ON DELETE CASCADE,
    verified_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX merchant_domains_merchant ON merchant_domains (merchant_id);

-- Every posd instance LISTENs on posd_hosts and drops its whole cache of
-- request hosts: a domain added, verified or removed, a merchant created
-- or deleted (a cached unknown `<slug>.<base>` may now name it), or a slug
-- changed.
CREATE FUNCTION posd_notify_hosts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('posd_hosts', '*');
    RETURN NULL;
END
$$;

CREATE TRIGGER merchant_domains_changed
    AFTER INSERT OR UPDATE OR DELETE ON merchant_domains
    FOR EACH STATEMENT
    EXECUTE FUNCTION posd_notify_hosts();

CREATE TRIGGER merchants_hosts_changed
    AFTER INSERT OR DELETE OR UPDATE OF slug ON merchants
    FOR EACH STATEMENT
    EXECUTE FUNCTION posd_notify_hosts();
