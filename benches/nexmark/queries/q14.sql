-- Nexmark q14: calculation. Flink's UDF count_char(extra, 'c') is written with DataFusion's
-- string functions: the length lost by removing every 'c'.
CREATE MATERIALIZED VIEW nexmark_q14 AS
SELECT auction,
       bidder,
       0.908 * price AS price,
       CASE
           WHEN extract(hour FROM date_time) >= 8 AND extract(hour FROM date_time) <= 18
               THEN 'dayTime'
           WHEN extract(hour FROM date_time) <= 6 OR extract(hour FROM date_time) >= 20
               THEN 'nightTime'
           ELSE 'otherTime'
       END AS bid_time_type,
       date_time,
       extra,
       character_length(extra) - character_length(replace(extra, 'c', '')) AS c_counts
FROM bid
WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000;
