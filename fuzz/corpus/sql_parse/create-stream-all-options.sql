CREATE STREAM IF NOT EXISTS c (a INT NOT NULL, b TEXT, ts TIMESTAMP NOT NULL)
  WITH (shards = 4, format = 'csv', event_time = 'ts', watermark = '5 seconds',
        partition_by = 'date(ts), hour(ts)', retention = 'forever', retention_bytes = 1073741824)