-- Integrations (payment, email, accounting...): per merchant, or the
-- platform's default for a kind when merchant_id is NULL. Settings are
-- plain jsonb; credentials are stored sealed only (AES-256-GCM, the
-- associated data binding the merchant, the integration and the purpose:
-- src/crypto.rs), with a keyed fingerprint and when they were set. SHARED
-- (src/tenancy/classification.rs).
CREATE TABLE merchant_integrations (
    id                       uuid PRIMARY KEY,
    merchant_id              uuid REFERENCES merchants (id) ON DELETE CASCADE,
    kind                     text NOT NULL
        CHECK (kind IN ('payment', 'email', 'sms', 'accounting', 'shipping')),
    provider                 text NOT NULL CHECK (provider ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    settings                 jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT merchant_integrations_settings_object CHECK (jsonb_typeof(settings) = 'object'),
    credentials_sealed       bytea,
    credentials_key_id       text,
    credentials_fingerprint  text,
    credentials_set_at       timestamptz,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT merchant_integrations_credentials_whole CHECK (
        (credentials_sealed IS NULL) = (credentials_key_id IS NULL)
        AND (credentials_sealed IS NULL) = (credentials_fingerprint IS NULL)
        AND (credentials_sealed IS NULL) = (credentials_set_at IS NULL))
);

-- One integration per merchant and kind, and one platform default per kind.
CREATE UNIQUE INDEX merchant_integrations_merchant_kind
    ON merchant_integrations (merchant_id, kind) WHERE merchant_id IS NOT NULL;
CREATE UNIQUE INDEX merchant_integrations_platform_kind
    ON merchant_integrations (kind) WHERE merchant_id IS NULL;
