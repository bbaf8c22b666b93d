"""DuckDB timings over a positions lake: count(*), a resolution-7 region, 5 columns, region + 1 h.

Usage: lake_query.py DATA_DIR (docs/PERFORMANCE.md, "Lake")."""
import sys, time, duckdb
from h3range import descendant_range
data = sys.argv[1]
con = duckdb.connect()
rel = f"read_parquet('{data}/positions/date=*/*.parquet', hive_partitioning = true)"
cell = con.execute(f"SELECT h3 FROM {rel} GROUP BY h3 ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
p7 = ((cell & ~(0xF << 52)) | (7 << 52)) | ((1 << 24) - 1)
lo, hi = descendant_range(p7)
qs = {
  "count(*)": f"SELECT count(*) FROM {rel}",
  "region r7": f"SELECT count(*) FROM {rel} WHERE h3 BETWEEN {lo} AND {hi}",
  "region r7, 5 columns": f"SELECT device_id, time, lat, lon, speed_mps FROM {rel} WHERE h3 BETWEEN {lo} AND {hi}",
  "region r7 + 1 h": f"SELECT count(*) FROM {rel} WHERE h3 BETWEEN {lo} AND {hi} AND time >= (SELECT min(time) FROM {rel}) + INTERVAL 30 MINUTE AND time < (SELECT min(time) FROM {rel}) + INTERVAL 90 MINUTE",
}
for name, q in qs.items():
    best = None
    for _ in range(3):
        t = time.perf_counter(); con.execute(q).fetchall(); d = time.perf_counter() - t
        best = d if best is None else min(best, d)
    print(f"{name}: {best*1000:.0f} ms (best of 3)")
