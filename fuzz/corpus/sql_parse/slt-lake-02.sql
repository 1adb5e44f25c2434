SELECT count(*) FROM trades VERSION AS OF 0
