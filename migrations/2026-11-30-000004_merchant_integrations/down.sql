DROP TABLE merchant_integrations;
