DROP TABLE merchant_daily_summaries;
DROP TABLE jobs;
