DROP TRIGGER product_versions ON products;
DROP FUNCTION record_product_version();
DROP TABLE product_versions;
