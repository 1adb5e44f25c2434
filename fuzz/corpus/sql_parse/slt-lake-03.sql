CREATE TABLE volumes PARTITIONED BY (ticker) AS SELECT ticker, sum(qty) AS qty, max(price) AS high FROM trades GROUP BY ticker
