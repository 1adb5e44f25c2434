"""Nexmark's queries as Sluice views, each with its batch recomputation in DuckDB.

The events are three streams, `persons`, `auctions` and `bids` (`sluice gen nexmark --only …`),
not one stream of three shapes: Sluice's streams are typed (declared columns, an event-time
column and a watermark each), a join reads two streams, and one stream of three shapes would
give every query nullable union columns and a filter to start with.

Each query is one or more views (`VIEWS[q]`: created in order, the last one is the query's
answer) and the DuckDB query that gives the same rows from the NDJSON files (`DUCKDB[q]`, over
the tables persons, auctions, bids, and `raw_bids`: the bids' raw table, for `_ingested_at`).
Windows Sluice has not closed at the end of the input (their end after the last event) are
left out of both: Sluice writes a window once the watermark passes its end, and nothing comes
after the last event to move it there.

Queries that cannot run as views yet, and why, are in `UNSUPPORTED`.
"""

STREAMS = {
    "persons": "CREATE STREAM persons (id BIGINT NOT NULL, name TEXT, email_address TEXT, "
    "credit_card TEXT, city TEXT, state TEXT, date_time TIMESTAMP NOT NULL, extra TEXT) "
    "WITH (shards = 2, event_time = 'date_time', watermark = '0 seconds')",
    "auctions": "CREATE STREAM auctions (id BIGINT NOT NULL, item_name TEXT, description TEXT, "
    "initial_bid BIGINT, reserve BIGINT, date_time TIMESTAMP NOT NULL, expires TIMESTAMP NOT NULL, "
    "seller BIGINT NOT NULL, category BIGINT NOT NULL, extra TEXT) "
    "WITH (shards = 2, event_time = 'date_time', watermark = '0 seconds')",
    "bids": "CREATE STREAM bids (auction BIGINT NOT NULL, bidder BIGINT NOT NULL, "
    "price BIGINT NOT NULL, channel TEXT, url TEXT, date_time TIMESTAMP NOT NULL, extra TEXT) "
    "WITH (shards = 2, event_time = 'date_time', watermark = '0 seconds')",
}

# DuckDB's columns of the NDJSON files, as the streams declare them.
COLUMNS = {
    "persons": "{id: 'BIGINT', name: 'VARCHAR', email_address: 'VARCHAR', credit_card: 'VARCHAR', "
    "city: 'VARCHAR', state: 'VARCHAR', date_time: 'TIMESTAMP', extra: 'VARCHAR'}",
    "auctions": "{id: 'BIGINT', item_name: 'VARCHAR', description: 'VARCHAR', initial_bid: 'BIGINT', "
    "reserve: 'BIGINT', date_time: 'TIMESTAMP', expires: 'TIMESTAMP', seller: 'BIGINT', "
    "category: 'BIGINT', extra: 'VARCHAR'}",
    "bids": "{auction: 'BIGINT', bidder: 'BIGINT', price: 'BIGINT', channel: 'VARCHAR', "
    "url: 'VARCHAR', date_time: 'TIMESTAMP', extra: 'VARCHAR'}",
}

# The side input of q13: a lake table, created before the query.
SIDE_INPUT = (
    "CREATE TABLE side_input AS SELECT value AS key, CAST(value AS VARCHAR) AS value "
    "FROM generate_series(0, 9999)"
)

CHANNEL_ID = "'(&|^)channel_id=([^&]*)'"
RANKS = [("rank1", "price < 10000"), ("rank2", "price >= 10000 AND price < 1000000"),
         ("rank3", "price >= 1000000")]


def _day_counts() -> str:
    """q15–q17's counts: bids, bidders and auctions, in all and by price rank."""
    columns = ["count(*) AS total_bids"]
    columns += [f"count(*) FILTER (WHERE {cond}) AS {rank}_bids" for rank, cond in RANKS]
    for what, column in (("bidders", "bidder"), ("auctions", "auction")):
        columns.append(f"count(DISTINCT {column}) AS total_{what}")
        columns += [f"count(DISTINCT {column}) FILTER (WHERE {cond}) AS {rank}_{what}"
                    for rank, cond in RANKS]
    return ", ".join(columns)


def _auction_day() -> str:
    columns = ["count(*) AS total_bids"]
    columns += [f"count(*) FILTER (WHERE {cond}) AS {rank}_bids" for rank, cond in RANKS]
    columns += ["min(price) AS min_price", "max(price) AS max_price", "avg(price) AS avg_price",
                "sum(price) AS sum_price"]
    return ", ".join(columns)


HOUR = "date_part('hour', date_time)"
BID_TIME_TYPE = (
    f"CASE WHEN {HOUR} BETWEEN 8 AND 18 THEN 'dayTime' "
    f"WHEN {HOUR} <= 6 OR {HOUR} >= 20 THEN 'nightTime' ELSE 'otherTime' END"
)
COUNT_C = "length(extra) - length(replace(extra, 'c', ''))"

VIEWS = {
    # Pass-through.
    "q0": ["SELECT auction, bidder, price, date_time, extra FROM bids"],
    # Currency conversion.
    "q1": ["SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bids"],
    # Selection.
    "q2": ["SELECT auction, price FROM bids WHERE auction % 123 = 0"],
    # Monitor new users: who opened an auction in the 10 s window they registered in (a window
    # join, then each person once a window).
    # Hot items: the auctions with the most bids in each sliding window (RANK per window, ties
    # kept, as the suite's `num >= maxn`).
    "q5": ["SELECT auction, num, starttime, endtime FROM (SELECT auction, count(*) AS num, "
           "window_start AS starttime, window_end AS endtime, "
           "rank() OVER (PARTITION BY window_start ORDER BY count(*) DESC) AS r "
           "FROM HOP(bids, date_time, INTERVAL '2 seconds', INTERVAL '10 seconds') "
           "GROUP BY auction, window_start, window_end) WHERE r = 1"],
    "q8": [
        "SELECT p.id, p.name, p.window_start AS starttime, a.id AS auction "
        "FROM TUMBLE(persons, date_time, INTERVAL '10 seconds') p "
        "JOIN TUMBLE(auctions, date_time, INTERVAL '10 seconds') a "
        "ON p.id = a.seller AND p.window_start = a.window_start",
        "SELECT id, name, starttime, count(*) AS auctions FROM {q8_1} GROUP BY id, name, starttime",
    ],
    # Log to a partitioned table.
    "q10": ["SELECT auction, bidder, price, date_time, extra, to_char(date_time, '%Y-%m-%d') AS dt, "
            "to_char(date_time, '%H:%M') AS hm FROM bids"],
    # User sessions: a bidder's bids less than 10 s apart.
    "q11": ["SELECT bidder, count(*) AS bid_count, window_start AS starttime, window_end AS endtime "
            "FROM SESSION(bids, date_time, INTERVAL '10 seconds') GROUP BY bidder, window_start, window_end"],
    # Processing-time windows: by the time each bid reached the log.
    "q12": ["SELECT bidder, count(*) AS bid_count, window_start AS starttime, window_end AS endtime "
            "FROM TUMBLE(bids, _ingested_at, INTERVAL '10 seconds') GROUP BY bidder, window_start, window_end"],
    # A bounded side input: a lake table.
    "q13": ["SELECT b.auction, b.bidder, b.price, b.date_time, s.value FROM bids b "
            "JOIN side_input s ON b.auction % 10000 = s.key"],
    # Filter, CASE, and what Flink's suite computes with a UDF (count_char).
    "q14": [f"SELECT auction, bidder, 0.908 * price AS price, {BID_TIME_TYPE} AS bid_time_type, "
            f"date_time, extra, {COUNT_C} AS c_counts FROM bids "
            "WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000"],
    # Bidding statistics a day.
    "q15": [f"SELECT to_char(date_time, '%Y-%m-%d') AS day, {_day_counts()} FROM bids "
            "GROUP BY to_char(date_time, '%Y-%m-%d')"],
    # … a channel and day.
    "q16": [f"SELECT channel, to_char(date_time, '%Y-%m-%d') AS day, {_day_counts()} FROM bids "
            "GROUP BY channel, to_char(date_time, '%Y-%m-%d')"],
    # … an auction and day.
    "q17": [f"SELECT auction, to_char(date_time, '%Y-%m-%d') AS day, {_auction_day()} FROM bids "
            "GROUP BY auction, to_char(date_time, '%Y-%m-%d')"],
    # Channel ids from the url.
    "q21": ["SELECT auction, bidder, price, channel, CASE WHEN lower(channel) = 'apple' THEN '0' "
            "WHEN lower(channel) = 'google' THEN '1' WHEN lower(channel) = 'facebook' THEN '2' "
            "WHEN lower(channel) = 'baidu' THEN '3' "
            f"ELSE regexp_match(url, {CHANNEL_ID})[2] END AS channel_id FROM bids "
            f"WHERE regexp_match(url, {CHANNEL_ID})[2] IS NOT NULL "
            "OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')"],
    # The url's directories.
    "q22": ["SELECT auction, bidder, price, channel, split_part(url, '/', 4) AS dir1, "
            "split_part(url, '/', 5) AS dir2, split_part(url, '/', 6) AS dir3 FROM bids"],
    # Not Nexmark's: a temporal join, each bid with its auction as it was at the bid's time.
    "asof": ["SELECT b.auction, b.bidder, b.price, b.date_time, a.seller, a.category FROM bids b "
             "JOIN auctions FOR SYSTEM_TIME AS OF b.date_time AS a ON b.auction = a.id"],
}

# Windows whose end is after the last event of their input are left out (see the module doc).
LAST_BID = "(SELECT max(date_time) FROM bids)"
DUCKDB = {
    "q0": "SELECT auction, bidder, price, date_time, extra FROM bids",
    "q1": "SELECT auction, bidder, 0.908::DOUBLE * price AS price, date_time, extra FROM bids",
    "q2": "SELECT auction, price FROM bids WHERE auction % 123 = 0",
    "q5": "WITH hops AS (SELECT auction, time_bucket(INTERVAL 2 SECOND, date_time) - to_seconds(2 * i) "
    "AS ws FROM bids, range(0, 5) AS r(i)), counts AS (SELECT auction, count(*) AS num, ws FROM hops "
    "GROUP BY ALL) SELECT auction, num, ws AS starttime, ws + INTERVAL 10 SECOND AS endtime FROM "
    "(SELECT *, rank() OVER (PARTITION BY ws ORDER BY num DESC) AS r FROM counts) "
    f"WHERE r = 1 AND ws + INTERVAL 10 SECOND <= {LAST_BID}",
    "q8": "SELECT p.id, p.name, time_bucket(INTERVAL 10 SECOND, p.date_time) AS starttime, "
    "count(*) AS auctions FROM persons p JOIN auctions a ON p.id = a.seller "
    "AND time_bucket(INTERVAL 10 SECOND, p.date_time) = time_bucket(INTERVAL 10 SECOND, a.date_time) "
    "GROUP BY ALL",
    "q10": "SELECT auction, bidder, price, date_time, extra, strftime(date_time, '%Y-%m-%d') AS dt, "
    "strftime(date_time, '%H:%M') AS hm FROM bids",
    "q11": "WITH gaps AS (SELECT bidder, date_time, CASE WHEN date_time - lag(date_time) OVER "
    "(PARTITION BY bidder ORDER BY date_time) < INTERVAL 10 SECOND THEN 0 ELSE 1 END AS starts "
    "FROM bids), sessions AS (SELECT bidder, date_time, sum(starts) OVER (PARTITION BY bidder "
    "ORDER BY date_time ROWS UNBOUNDED PRECEDING) AS session FROM gaps) "
    "SELECT bidder, count(*) AS bid_count, min(date_time) AS starttime, "
    "max(date_time) + INTERVAL 10 SECOND AS endtime FROM sessions GROUP BY bidder, session "
    f"HAVING max(date_time) + INTERVAL 10 SECOND <= {LAST_BID}",
    "q12": "SELECT bidder, count(*) AS bid_count, time_bucket(INTERVAL 10 SECOND, _ingested_at) "
    "AS starttime, time_bucket(INTERVAL 10 SECOND, _ingested_at) + INTERVAL 10 SECOND AS endtime "
    "FROM raw_bids GROUP BY ALL HAVING time_bucket(INTERVAL 10 SECOND, _ingested_at) + "
    "INTERVAL 10 SECOND <= (SELECT max(_ingested_at) FROM raw_bids)",
    "q13": "SELECT auction, bidder, price, date_time, CAST(auction % 10000 AS VARCHAR) AS value FROM bids",
    "q14": f"SELECT auction, bidder, 0.908::DOUBLE * price AS price, {BID_TIME_TYPE} AS bid_time_type, "
    f"date_time, extra, {COUNT_C} AS c_counts FROM bids "
    "WHERE 0.908::DOUBLE * price > 1000000 AND 0.908::DOUBLE * price < 50000000",
    "q15": f"SELECT strftime(date_time, '%Y-%m-%d') AS day, {_day_counts()} FROM bids GROUP BY ALL",
    "q16": f"SELECT channel, strftime(date_time, '%Y-%m-%d') AS day, {_day_counts()} FROM bids GROUP BY ALL",
    "q17": f"SELECT auction, strftime(date_time, '%Y-%m-%d') AS day, {_auction_day()} FROM bids GROUP BY ALL",
    "q21": "SELECT auction, bidder, price, channel, CASE WHEN lower(channel) = 'apple' THEN '0' "
    "WHEN lower(channel) = 'google' THEN '1' WHEN lower(channel) = 'facebook' THEN '2' "
    "WHEN lower(channel) = 'baidu' THEN '3' "
    f"ELSE nullif(regexp_extract(url, {CHANNEL_ID}, 2), '') END AS channel_id FROM bids "
    f"WHERE regexp_matches(url, {CHANNEL_ID}) OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')",
    "q22": "SELECT auction, bidder, price, channel, split_part(url, '/', 4) AS dir1, "
    "split_part(url, '/', 5) AS dir2, split_part(url, '/', 6) AS dir3 FROM bids",
    # A bid is joined once the auctions' watermark passes its time: at the end, when the idle
    # auctions follow the bids' watermark, the bids of the last instant still wait.
    "asof": "SELECT b.auction, b.bidder, b.price, b.date_time, a.seller, a.category FROM bids b "
    "ASOF JOIN auctions a ON b.auction = a.id AND b.date_time >= a.date_time "
    f"WHERE b.date_time < {LAST_BID}",
}

# What each query reads: the events it takes, for events/s.
READS = {q: ["bids"] for q in VIEWS}
READS["q8"] = ["persons", "auctions"]
READS["asof"] = ["auctions", "bids"]

UNSUPPORTED = {
    "q3": "a join without a time bound (every person and auction kept for ever): Sluice joins "
    "two streams within a time bound",
    "q4": "a join bounded by a column (bids until the auction's `expires`), then an average of "
    "a maximum: two aggregations, the second over an updating view",
    "q6": "OVER (ROWS 10 PRECEDING) per seller: views have no OVER yet",
    "q7": "a join of bids with the maximum of their own window: a join's inputs are streams, "
    "not views",
    "q9": "ROW_NUMBER() per auction over all time (the winning bid): ranks only a windowed "
    "view's groups per window, whose windows close whole; a rank over all time changes row by row",
    "q18": "ROW_NUMBER() per bidder and auction over all time (deduplication): the same",
    "q19": "ROW_NUMBER() ≤ 10 per auction over all time (Top-N): the same",
    "q20": "a join bounded by a column (bids until the auction's `expires`): Sluice bounds a "
    "join by intervals",
}


def views(query: str) -> list[tuple[str, str]]:
    """The views of `query`, named `q8_1`, `q8_2`, … (the last one is the answer), each
    definition's `{q8_1}` standing for the view before it."""
    defs = VIEWS[query]
    names = [query if len(defs) == 1 else f"{query}_{i + 1}" for i in range(len(defs))]
    named = {n: n for n in names}
    return [(name, sql.format(**named)) for name, sql in zip(names, defs)]
