SELECT raw, reason FROM trades_errors ORDER BY _seq
