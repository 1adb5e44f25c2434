SELECT ticker, qty, high FROM volumes VERSION AS OF 0 ORDER BY ticker
