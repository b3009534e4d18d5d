-- Nexmark q10: log to file system. Flink writes the rows into a file sink partitioned by
-- day and minute; Sluice has no sinks yet, so the view holds the rows with their partition
-- columns. DATE_FORMAT(date_time, 'yyyy-MM-dd') / 'HH:mm' is DataFusion's to_char with
-- chrono patterns.
CREATE MATERIALIZED VIEW nexmark_q10 AS
SELECT auction, bidder, price, date_time, extra,
       to_char(date_time, '%Y-%m-%d') AS dt,
       to_char(date_time, '%H:%M') AS hm
FROM bid;
