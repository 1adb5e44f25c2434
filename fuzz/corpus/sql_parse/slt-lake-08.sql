SELECT v0.qty, v1.qty FROM volumes VERSION AS OF 0 AS v0 JOIN volumes VERSION AS OF 1 v1 ON v0.ticker = v1.ticker WHERE v0.ticker = 'BBB'
