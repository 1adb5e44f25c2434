DROP STREAM clicks
# Queries of a stream's raw and errors tables: every acknowledged record, at once.
