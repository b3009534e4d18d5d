-- Sessions per bidder. EMIT ON WINDOW CLOSE (as Flink's window aggregates emit): each
-- session is emitted once, when it closes. Updating sessions re-emit a session's rows each
-- time it grows, which on Nexmark's hot bidders is quadratic.
CREATE MATERIALIZED VIEW nexmark_q11 AS
SELECT B.bidder, count(*) AS bid_count, window_start AS starttime, window_end AS endtime
FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) AS B
GROUP BY B.bidder, window_start, window_end
EMIT ON WINDOW CLOSE;
