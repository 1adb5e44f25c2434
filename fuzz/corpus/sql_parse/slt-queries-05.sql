SELECT count(*), count(DISTINCT _shard) <= 2 FROM ticks
