CREATE MATERIALIZED VIEW named_ticks AS SELECT t.ticker, m.coluice FROM ticks t JOIN merchants m ON t.ticker == m. 0
