CREATE MATERIALIZED VIEW named_ticks AS SELECT t.ticker, m.column2 AS name, t.price FROM ticks t JOIN merchants m ON t.ticker = m.column1 WHERE t.price > 0
