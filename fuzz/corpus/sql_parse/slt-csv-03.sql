SELECT ticker, price, qty, ts FROM trades ORDER BY ts
