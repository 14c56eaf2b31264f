DROP INDEX admin_audit_merchant;
