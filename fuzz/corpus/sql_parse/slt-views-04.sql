CREATE MATERIALIZED VIEW latest_price AS SELECT ticker, last_value(price ORDER BY ts) AS price, max(ts) AS ts FROM ticks GROUP BY ticker
