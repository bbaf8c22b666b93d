"""H3 cell ranges for region queries over the `h3` column (shared by bench/lake_query.py and
.ci/lake_interop.py).

An H3 index orders its children right after the parent's resolution bits, so every
descendant of `parent` at resolution `res` lies in one closed integer range: the parent
with unused digits 0 (lowest child) to the parent with unused digits 6 (highest). A region
query is then `h3 BETWEEN lo AND hi`, which Parquet min/max statistics can prune."""


def descendant_range(parent, res=10):
    """(lo, hi): the smallest and largest resolution-`res` descendant of cell `parent`."""
    r = (parent >> 52) & 0xF
    base = (parent & ~(0xF << 52)) | (res << 52)
    shift = (15 - res) * 3
    mask = ((1 << ((res - r) * 3)) - 1) << shift
    sixes = (int("6" * (res - r), 8) << shift) if res > r else 0
    lo = base & ~mask
    return lo, lo | sixes
