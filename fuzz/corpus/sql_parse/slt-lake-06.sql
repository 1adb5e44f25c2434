SELECT ticker, qty, high FROM volumes ORDER BY ticker
