-- Nexmark q22: get URL directories. Flink's SPLIT_INDEX(url, '/', n) counts from 0,
-- split_part from 1.
CREATE MATERIALIZED VIEW nexmark_q22 AS
SELECT auction,
       bidder,
       price,
       channel,
       split_part(url, '/', 4) AS dir1,
       split_part(url, '/', 5) AS dir2,
       split_part(url, '/', 6) AS dir3
FROM bid;
