"""The lake as the data team reads it: every reader, through the table and as plain Parquet.

Usage: lake_interop.py DATA_DIR [--compacted] [--expect-rows N]

* deltalake (delta-rs) opens positions as a Delta table, reads it, time-travels to version 1,
  and agrees with the plain-Parquet readers on the rows;
* DuckDB, Polars, pyarrow and DataFusion read the plain Parquet (the globs docs/STORAGE.md
  prints) with the types docs/STORAGE.md lists, `date` typed;
* the plain view holds exactly the table's files (no doubled or orphan file);
* with --compacted: a region + time query reads at most 5 % of the row groups (counted from
  the row-group statistics a pruning reader uses) and the figure is printed.
"""
import datetime as dt
import json
import sys

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import DeltaTable

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "bench"))
from h3range import descendant_range  # noqa: E402

args = sys.argv[1:]
data = args[0]
compacted = "--compacted" in args
expect_rows = int(args[args.index("--expect-rows") + 1]) if "--expect-rows" in args else None
positions = f"{data}/positions"
glob = f"{positions}/date=*/*.parquet"
checks = 0


def check(cond, msg):
    global checks
    assert cond, msg
    checks += 1


# --- through the table (delta-rs) ---------------------------------------------------------
table = DeltaTable(positions)
delta = table.to_pyarrow_dataset().to_table()
check(delta.schema.field("date").type == pa.date32(), f"delta date: {delta.schema.field('date').type}")
check(delta.schema.field("lat").type == pa.decimal128(9, 7), delta.schema.field("lat").type)
check(delta.schema.field("lon").type == pa.decimal128(10, 7), delta.schema.field("lon").type)
check(delta.schema.field("time").type == pa.timestamp("us", tz="UTC"), delta.schema.field("time").type)
n = delta.num_rows
if expect_rows is not None:
    check(n == expect_rows, f"delta rows {n} != {expect_rows}")
import os

live = sorted(os.path.abspath(u.removeprefix("file://")) for u in table.file_uris())
print(f"delta-rs: version {table.version()}, {len(live)} files, {n} rows")
if not compacted:
    # Time travel (a compacted and vacuumed lake no longer has version 1's files).
    v1 = DeltaTable(positions, version=1).to_pyarrow_dataset().count_rows()
    check(0 < v1 <= n, f"time travel to version 1: {v1} rows")

# --- plain view == table -----------------------------------------------------------------
import glob as globmod

plain = sorted(os.path.abspath(p) for p in globmod.glob(glob))
check(plain == live, f"plain files differ from the table: {set(plain) ^ set(live)}")

# --- DuckDB ------------------------------------------------------------------------------
con = duckdb.connect()
rel = f"read_parquet('{glob}', hive_partitioning = true)"
types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()}
check(types["date"] == "DATE", f"duckdb date: {types['date']}")
check(types["lat"] == "DECIMAL(9,7)", types["lat"])
check(types["time"] == "TIMESTAMP WITH TIME ZONE", types["time"])
check(types["h3"] == "BIGINT", types["h3"])
rows, distinct = con.execute(
    f"SELECT count(*), count(DISTINCT (device_id, batch_seq, time)) FROM {rel}"
).fetchone()
check(rows == n and distinct == n, f"duckdb {rows} rows, {distinct} distinct, delta {n}")

# --- Polars ------------------------------------------------------------------------------
lf = pl.scan_parquet(glob, hive_partitioning=True)
schema = lf.collect_schema()
check(schema["date"] == pl.Date, f"polars date: {schema['date']}")
check(lf.select(pl.len()).collect().item() == n, "polars rows")
check(pl.scan_delta(positions).select(pl.len()).collect().item() == n, "polars scan_delta rows")

# --- pyarrow -----------------------------------------------------------------------------
part = ds.partitioning(pa.schema([("date", pa.date32())]), flavor="hive")
pds = ds.dataset(positions, format="parquet", partitioning=part)
check(pds.schema.field("date").type == pa.date32(), "pyarrow date")
check(pds.count_rows() == n, f"pyarrow rows {pds.count_rows()} != {n}")
# Float statistics are usable: a bounding box on a float column prunes in pyarrow too.
for f in plain[:1]:
    md = pq.ParquetFile(f).metadata
    idx = md.schema.names.index("accuracy_m")
    st = md.row_group(0).column(idx).statistics
    # parquet 60 writes IEEE_754_TOTAL_ORDER for float columns (no writer option), and
    # pyarrow 26 does not read min/max under that order: a known gap (docs/STORAGE.md),
    # reported here, not asserted, until the float columns are stored another way.
    usable = st is not None and (st.has_min_max or st.null_count == md.row_group(0).num_rows)
    print(f"pyarrow float statistics usable: {usable} (known gap when False: IEEE-754 total order)")

# --- DataFusion --------------------------------------------------------------------------
from datafusion import SessionContext

ctx = SessionContext()
ctx.register_parquet(
    "positions", f"{positions}/",
    table_partition_cols=[("date", pa.date32())],
    file_extension=".parquet",
)
dfn = ctx.sql("SELECT count(*) AS n FROM positions").to_pydict()["n"][0]
check(dfn == n, f"datafusion rows {dfn} != {n}")
dfd = ctx.sql("SELECT date FROM positions LIMIT 1").to_arrow_table().schema.field("date").type
check(dfd == pa.date32(), f"datafusion date: {dfd}")

# --- row groups a region + time query reads (compacted lake) ---------------------------------


if compacted:
    # The resolution-7 parent of the busiest cell, for a one-hour window.
    (cell, day, hour) = con.execute(
        f"SELECT h3, date, date_trunc('hour', time) FROM {rel} GROUP BY ALL ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()
    parent7 = (cell & ~(0xF << 52)) | (7 << 52)
    parent7 |= (1 << ((15 - 7) * 3)) - 1  # unused digits = 7
    lo, hi = descendant_range(parent7, 10)
    def us(x):
        if isinstance(x, dt.datetime):
            if x.tzinfo is None:
                x = x.replace(tzinfo=dt.timezone.utc)
            return round(x.timestamp() * 1_000_000)
        return int(x)

    t0 = hour if hour.tzinfo else hour.replace(tzinfo=dt.timezone.utc)
    t1 = t0 + dt.timedelta(hours=1)
    t0us, t1us = us(t0), us(t1)
    total = read = 0
    for f in plain:
        md = pq.ParquetFile(f).metadata
        hi_idx = md.schema.names.index("h3")
        t_idx = md.schema.names.index("time")
        for g in range(md.num_row_groups):
            total += 1
            h = md.row_group(g).column(hi_idx).statistics
            t = md.row_group(g).column(t_idx).statistics
            if h.max >= lo and h.min <= hi and us(t.max) >= t0us and us(t.min) < t1us:
                read += 1
    frac = read / total
    got = con.execute(
        f"SELECT count(*) FROM {rel} WHERE date = DATE '{day}' AND h3 BETWEEN {lo} AND {hi} "
        f"AND time >= TIMESTAMPTZ '{t0.isoformat()}' AND time < TIMESTAMPTZ '{t1.isoformat()}'"
    ).fetchone()[0]
    print(f"region+time query: {read} of {total} row groups ({100 * frac:.2f} %), {got} rows")
    check(got > 0, "the region query found nothing")
    check(frac <= 0.05, f"region+time query reads {100 * frac:.2f} % of row groups (> 5 %)")

print(f"lake interop: {checks} passed, 0 failed")
