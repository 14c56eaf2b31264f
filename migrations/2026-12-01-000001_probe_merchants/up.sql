-- Merchants posd makes for itself to probe isolation between tenants
-- (src/tenancy/probe.rs): hidden from operators' listings, never billed.
ALTER TABLE merchants ADD COLUMN probe boolean NOT NULL DEFAULT false;
