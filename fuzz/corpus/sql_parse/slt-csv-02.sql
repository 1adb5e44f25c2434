CREATE STREAM bad WITH (format = 'csv')
