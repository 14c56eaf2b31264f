DROP FUNCTION posd_sale_write;
DROP FUNCTION posd_sale_record;
DROP FUNCTION posd_sale_read;
