-- The last bid per bidder and auction (deduplication). Nexmark orders by date_time alone;
-- bids at the same millisecond tie, and ROW_NUMBER may pick either, so the gate could not
-- compare. Ordering by price and extra as well picks one, here and in the batch query.
CREATE MATERIALIZED VIEW nexmark_q18 AS
SELECT auction, bidder, price, channel, url, date_time, extra
FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC, price DESC, extra) AS rank_number
    FROM bid
) AS B
WHERE rank_number <= 1;
