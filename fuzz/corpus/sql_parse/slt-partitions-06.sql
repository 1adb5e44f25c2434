SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'clicks' AND column_name IN ('ts_date', 'ts_hour') ORDER BY 1
