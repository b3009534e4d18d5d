-- Nexmark q2: selection. Flink's variant: bids of every 123rd auction.
CREATE MATERIALIZED VIEW nexmark_q2 AS
SELECT auction, price
FROM bid
WHERE auction % 123 = 0;
