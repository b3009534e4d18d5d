-- unsupported: needs processing-time TUMBLE windows
CREATE MATERIALIZED VIEW nexmark_q12 AS
SELECT bidder, count(*) AS bid_count, window_start, window_end
FROM TUMBLE((SELECT *, PROCTIME() AS p_time FROM bid), p_time, INTERVAL '10' SECOND)
GROUP BY bidder, window_start, window_end;
