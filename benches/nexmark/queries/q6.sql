-- unsupported: needs JOIN, Top-N (ROW_NUMBER) and OVER windows over a retracting input
CREATE MATERIALIZED VIEW nexmark_q6 AS
SELECT
    Q.seller,
    AVG(Q.price) OVER
        (PARTITION BY Q.seller ORDER BY Q.date_time ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg_price
FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY id, seller ORDER BY price DESC) AS rownum
    FROM (
        SELECT A.id, A.seller, B.price, B.date_time
        FROM auction AS A, bid AS B
        WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
    ) AS AB
) AS Q
WHERE Q.rownum <= 1;
