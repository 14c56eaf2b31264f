DROP TABLE merchant_usage;
