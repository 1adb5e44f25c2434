CREATE STREAM trades (ticker TEXT NOT NULL, price DOUBLE, qty BIGINT, ts TIMESTAMP NOT NULL) WITH (format = 'csv', shards = 1)
