-- Nexmark q0: pass-through. Measures the source and the view's write path.
CREATE MATERIALIZED VIEW nexmark_q0 AS
SELECT auction, bidder, price, date_time, extra
FROM bid;
