DROP TRIGGER merchants_hosts_changed ON merchants;
DROP TABLE merchant_domains;
DROP FUNCTION posd_notify_hosts();
