DROP STREAM trades
# Partitioned streams: Hive-style folders by declared columns and by the date and hour of the
# event time, as derived columns of the raw table.
