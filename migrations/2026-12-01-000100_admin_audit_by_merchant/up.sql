-- A merchant's owner reads the operator actions on their merchant
-- (GET /audit), newest first, a page at a time.
CREATE INDEX admin_audit_merchant ON admin_audit (merchant_id, at DESC, id DESC)
    WHERE merchant_id IS NOT NULL;
