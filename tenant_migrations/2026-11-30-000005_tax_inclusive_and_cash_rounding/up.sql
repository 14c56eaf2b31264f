-- Tax-inclusive pricing and cash rounding. Each order records how it was
-- priced and what cash rounding it settled with, so that a later change
-- of the merchant's settings does not reinterpret it.
--
-- prices_include_tax: the lines' gross amounts include their tax (it is
-- extracted, not added): a line's and the order's total is gross −
-- discount. False for every order made before.
--
-- rounding_minor: what cash rounding added to (or, negative, took off) the
-- amount the customer paid: the payments settle total_minor +
-- rounding_minor. Zero for every order made before, and for any order
-- without cash.

ALTER TABLE orders ADD COLUMN prices_include_tax boolean NOT NULL DEFAULT false;
ALTER TABLE orders ADD COLUMN rounding_minor bigint NOT NULL DEFAULT 0
    CHECK (rounding_minor BETWEEN -50 AND 50);

ALTER TABLE orders DROP CONSTRAINT orders_check1;
ALTER TABLE orders ADD CONSTRAINT orders_total CHECK (
    total_minor = gross_minor - discount_minor + CASE WHEN prices_include_tax THEN 0 ELSE tax_minor END);
ALTER TABLE orders ADD CONSTRAINT orders_included_tax CHECK (
    NOT prices_include_tax OR tax_minor <= total_minor);
ALTER TABLE orders DROP CONSTRAINT orders_check2;
ALTER TABLE orders ADD CONSTRAINT orders_settled CHECK (
    tendered_minor - change_minor = total_minor + rounding_minor);

-- A line does not repeat its order's mode: its total is either tax-exclusive
-- (tax added) or tax-inclusive (tax within it); the order's check above
-- ties the sum to the mode.
ALTER TABLE order_lines DROP CONSTRAINT order_lines_check1;
ALTER TABLE order_lines ADD CONSTRAINT order_lines_total CHECK (
    total_minor = gross_minor - discount_minor + tax_minor
    OR (total_minor = gross_minor - discount_minor AND tax_minor <= total_minor));
