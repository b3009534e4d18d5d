"""An ADBC Flight SQL session against Sluice's --flight-listen (argv[1]: grpc://host:port).

DDL, DML and FLUSH through cursor.execute, a view read as an Arrow table and compared
with what the inserted rows give, the catalog through adbc_get_objects, an error with its
SQLSTATE, a query after it, and statements with parameters. Prints one line per check for the Rust test to compare.
"""

import sys

import adbc_driver_flightsql.dbapi as flightsql

with flightsql.connect(sys.argv[1]) as conn:
    cur = conn.cursor()
    cur.execute("CREATE TABLE readings (sensor INT, value BIGINT)")
    values = [(i % 4, i * 3) for i in range(1, 201)]
    cur.execute(
        "INSERT INTO readings VALUES " + ", ".join(f"({s}, {v})" for s, v in values)
    )
    cur.execute(
        "CREATE MATERIALIZED VIEW per_sensor AS "
        "SELECT sensor, count(*) AS n, sum(value) AS total FROM readings GROUP BY sensor"
    )
    cur.execute("FLUSH")
    cur.execute("SELECT sensor, n, total FROM per_sensor ORDER BY sensor")
    table = cur.fetch_arrow_table()
    expected = {}
    for sensor, value in values:
        n, total = expected.get(sensor, (0, 0))
        expected[sensor] = (n + 1, total + value)
    got = {row["sensor"]: (row["n"], row["total"]) for row in table.to_pylist()}
    print("view", "equal" if got == expected else f"differs: {got} != {expected}")
    print("columns", ",".join(table.column_names))

    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    names = sorted(
        table["table_name"]
        for catalog in objects
        for schema in catalog["catalog_db_schemas"] or []
        for table in schema["db_schema_tables"] or []
    )
    print("tables", ",".join(names))

    try:
        cur.execute("SELECT * FROM nowhere")
        cur.fetchall()
        print("error none")
    except Exception as e:  # the driver's error class varies between versions
        print("error", "42P01" if "42P01" in str(e) else str(e))
    cur.execute("SELECT 40 + 2 AS answer")
    print("after", cur.fetchone()[0])

    # Parameters ($n, PostgreSQL's placeholders): executemany runs an INSERT per row,
    # and a query takes one row.
    added = [(9, 5), (9, 7), (8, 11)]
    cur.executemany("INSERT INTO readings VALUES ($1, $2)", added)
    cur.execute("SELECT count(*), sum(value) FROM readings WHERE sensor = $1", (9,))
    got = cur.fetchone()
    nines = [value for sensor, value in added if sensor == 9]
    wanted = (len(nines), sum(nines))
    print("parameters", "equal" if tuple(got) == wanted else f"differ: {got} != {wanted}")
