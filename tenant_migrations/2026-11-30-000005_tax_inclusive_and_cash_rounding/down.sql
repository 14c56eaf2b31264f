ALTER TABLE order_lines DROP CONSTRAINT order_lines_total;
ALTER TABLE order_lines ADD CONSTRAINT order_lines_check1 CHECK (
    total_minor = gross_minor - discount_minor + tax_minor);
ALTER TABLE orders DROP CONSTRAINT orders_settled;
ALTER TABLE orders DROP CONSTRAINT orders_included_tax;
ALTER TABLE orders DROP CONSTRAINT orders_total;
ALTER TABLE orders ADD CONSTRAINT orders_check1 CHECK (
    total_minor = gross_minor - discount_minor + tax_minor);
ALTER TABLE orders ADD CONSTRAINT orders_check2 CHECK (
    tendered_minor - change_minor = total_minor);
ALTER TABLE orders DROP COLUMN rounding_minor;
ALTER TABLE orders DROP COLUMN prices_include_tax;
