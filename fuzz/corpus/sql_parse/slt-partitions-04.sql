SELECT ts_date, ts_hour, count(*), min(user_id), country FROM clicks GROUP BY ts_date, ts_hour, country ORDER BY ts_date, ts_hour, country
