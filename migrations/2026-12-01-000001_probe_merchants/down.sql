ALTER TABLE merchants DROP COLUMN probe;
