-- unsupported: needs SESSION windows
CREATE MATERIALIZED VIEW nexmark_q11 AS
SELECT B.bidder, count(*) AS bid_count, window_start AS starttime, window_end AS endtime
FROM SESSION(bid B, date_time, INTERVAL '10' SECOND)
GROUP BY B.bidder, window_start, window_end;
