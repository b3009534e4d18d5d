"""A psycopg 3 session against Sluice: bound parameters (extended protocol), executemany,
binary results, and an error that leaves the connection usable. Prints one line per check;
the Rust test compares the output."""
import sys

import psycopg

with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    cur = conn.cursor()
    cur.execute("CREATE TABLE t (k INT, v BIGINT, name VARCHAR, ts TIMESTAMP)")
    cur.execute("INSERT INTO t VALUES (%s, %s, %s, %s)", (1, 10, "a", "2024-01-01 00:00:00"))
    cur.executemany("INSERT INTO t VALUES (%s, %s, %s, '2024-01-02')", [(2, 20, "b"), (1, 5, "c")])
    cur.execute("CREATE MATERIALIZED VIEW s AS SELECT k, sum(v) AS total, count(*) AS n FROM t GROUP BY k")
    cur.execute("FLUSH")
    cur.execute("SELECT k, total, n FROM s WHERE k = %s", (1,))
    print("param", cur.fetchall())
    cur.execute("SELECT name, ts FROM t WHERE v > %s ORDER BY v", (6,))
    print("typed", [(name, ts.isoformat()) for name, ts in cur.fetchall()])
    try:
        cur.execute("SELECT * FROM nope")
    except psycopg.Error as e:
        print("error", e.sqlstate)
    cur.execute("SELECT 1 + %s::INT AS x", (41,))
    print("after", cur.fetchone()[0])
    binary = conn.cursor(binary=True)
    binary.execute("SELECT k, total FROM s ORDER BY k")
    print("binary", binary.fetchall())
