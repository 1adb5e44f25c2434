-- The streams and views of `sluice demo`: the five use cases. Applied at every start (applying
-- it again changes nothing); `sluice serve --config` takes this file as it is.

-- 1. Market data (W1): one-minute bars per ticker, and the latest price of each.
CREATE STREAM ticks (ticker TEXT NOT NULL, price DOUBLE, volume BIGINT, ts TIMESTAMP NOT NULL)
  WITH (shards = 4, event_time = 'ts', watermark = '5 seconds', retention = '24 hours');

CREATE MATERIALIZED VIEW ticks_1m PARTITIONED BY (trade_date) AS
SELECT ticker, window_start, window_end, CAST(window_start AS DATE) AS trade_date,
       count(*) AS trades, avg(price) AS avg_price, min(price) AS min_price,
       max(price) AS max_price, sum(volume) AS volume, last_value(price ORDER BY ts) AS close
FROM TUMBLE(ticks, ts, INTERVAL '1 minute')
GROUP BY ticker, window_start, window_end;

CREATE MATERIALIZED VIEW latest_price AS
SELECT ticker, last_value(price ORDER BY ts) AS price, max(ts) AS ts, count(*) AS trades
FROM ticks GROUP BY ticker;

-- 2. Clickstream (W2): the cleaned, partitioned clicks table; events per minute by type,
--    device and country; unique users per hour; users with more than 20 events in 10 s.
CREATE STREAM clickstream (event_id TEXT NOT NULL, user_id TEXT, session_id TEXT,
    event_type TEXT NOT NULL, page TEXT, device TEXT, country TEXT, ts TIMESTAMP NOT NULL)
  WITH (shards = 4, event_time = 'ts', watermark = '5 seconds', retention = '24 hours');

CREATE MATERIALIZED VIEW clicks PARTITIONED BY (date, hour, event_type) AS
SELECT event_id, user_id, session_id, event_type, page, device, country, ts,
       CAST(ts AS DATE) AS date, CAST(date_part('hour', ts) AS INT) AS hour
FROM clickstream WHERE user_id IS NOT NULL;

CREATE MATERIALIZED VIEW clicks_per_minute AS
SELECT event_type, device, country, window_start, window_end, count(*) AS events
FROM TUMBLE(clickstream, ts, INTERVAL '1 minute')
GROUP BY event_type, device, country, window_start, window_end;

CREATE MATERIALIZED VIEW users_per_hour AS
SELECT date_trunc('hour', ts) AS hour, count(DISTINCT user_id) AS users, count(*) AS events
FROM clickstream GROUP BY date_trunc('hour', ts);

CREATE MATERIALIZED VIEW likely_bots AS
SELECT user_id, window_start, window_end, count(*) AS events
FROM TUMBLE(clickstream, ts, INTERVAL '10 seconds')
WHERE user_id IS NOT NULL
GROUP BY user_id, window_start, window_end
HAVING count(*) > 20;

-- 3. Payments: activity per card per minute, each merchant's running figures, payments far
--    above their merchant's running average, and high-value payments.
CREATE STREAM payments (payment_id TEXT NOT NULL, card_id TEXT NOT NULL,
    merchant_id TEXT NOT NULL, amount DOUBLE NOT NULL, currency TEXT, country TEXT,
    ts TIMESTAMP NOT NULL)
  WITH (shards = 2, event_time = 'ts', watermark = '5 seconds', retention = '24 hours');

CREATE MATERIALIZED VIEW card_activity_1m AS
SELECT card_id, window_start, window_end, count(*) AS payments, sum(amount) AS amount
FROM TUMBLE(payments, ts, INTERVAL '1 minute')
GROUP BY card_id, window_start, window_end;

CREATE MATERIALIZED VIEW merchant_stats AS
SELECT merchant_id, count(*) AS payments, avg(amount) AS avg_amount, max(amount) AS max_amount
FROM payments GROUP BY merchant_id;

CREATE MATERIALIZED VIEW payment_anomalies AS
SELECT p.payment_id, p.card_id, p.merchant_id, p.amount, m.avg_amount, p.ts
FROM payments p JOIN merchant_stats m ON p.merchant_id = m.merchant_id
WHERE m.payments >= 20 AND p.amount > 5 * m.avg_amount;

CREATE MATERIALIZED VIEW high_value_payments AS
SELECT payment_id, card_id, merchant_id, amount, currency, country, ts
FROM payments WHERE amount >= 1000;

-- 4. Logs: error rate per service per minute, and the 10-second windows where errors spike.
CREATE STREAM logs (service TEXT NOT NULL, level TEXT NOT NULL, status INT,
    latency_ms BIGINT, message TEXT, ts TIMESTAMP NOT NULL)
  WITH (shards = 2, event_time = 'ts', watermark = '5 seconds', retention = '24 hours');

CREATE MATERIALIZED VIEW error_rate_1m AS
SELECT service, window_start, window_end, count(*) AS lines,
       sum(CASE WHEN level = 'ERROR' THEN 1 ELSE 0 END) AS errors,
       avg(CASE WHEN level = 'ERROR' THEN 1.0 ELSE 0.0 END) AS error_rate,
       max(latency_ms) AS max_latency_ms
FROM TUMBLE(logs, ts, INTERVAL '1 minute')
GROUP BY service, window_start, window_end;

CREATE MATERIALIZED VIEW error_spikes AS
SELECT service, window_start, window_end, count(*) AS lines,
       sum(CASE WHEN level = 'ERROR' THEN 1 ELSE 0 END) AS errors
FROM TUMBLE(logs, ts, INTERVAL '10 seconds')
GROUP BY service, window_start, window_end
HAVING sum(CASE WHEN level = 'ERROR' THEN 1 ELSE 0 END) >= 5
   AND avg(CASE WHEN level = 'ERROR' THEN 1.0 ELSE 0.0 END) > 0.2;

-- 5. Sensors: average and maximum per device per 10 s, and readings past 50 °C.
CREATE STREAM sensors (device_id TEXT NOT NULL, temperature DOUBLE, humidity DOUBLE,
    battery DOUBLE, ts TIMESTAMP NOT NULL)
  WITH (shards = 2, event_time = 'ts', watermark = '5 seconds', retention = '24 hours');

CREATE MATERIALIZED VIEW sensor_10s AS
SELECT device_id, window_start, window_end, count(*) AS readings,
       avg(temperature) AS avg_temperature, max(temperature) AS max_temperature,
       avg(humidity) AS avg_humidity
FROM TUMBLE(sensors, ts, INTERVAL '10 seconds')
GROUP BY device_id, window_start, window_end;

CREATE MATERIALIZED VIEW overheating AS
SELECT device_id, temperature, humidity, ts FROM sensors WHERE temperature > 50;
