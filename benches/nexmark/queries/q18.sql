-- unsupported: needs Top-N (ROW_NUMBER), here deduplication: the last bid per bidder and auction
CREATE MATERIALIZED VIEW nexmark_q18 AS
SELECT auction, bidder, price, channel, url, date_time, extra
FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC) AS rank_number
    FROM bid
) AS B
WHERE rank_number <= 1;
