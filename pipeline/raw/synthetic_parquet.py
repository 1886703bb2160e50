"""Synthetic raw parquet for `[raw] source = parquet`, at any scale, one block in memory at a time.

`write_raw_parquet` generates one block with pipeline.raw.synthetic (users, items and
categories as given) and writes `copies` disjoint copies of it: copy k prefixes every
reviewerID and asin with `k` in fixed width, so the copies share the category names but
no user or item, and n copies are n times the block's users, items and reviews (50 copies
of the Electronics-sized block are "50x Electronics"). Each copy is one file of
raw/reviews/ and one of raw/meta/, written atomically; the planted signal is the block's.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from din_common.atomic import atomic_path
from pipeline.raw.frames import REVIEW_COLUMNS
from pipeline.raw.synthetic import generate


def _prefixed(column: pa.ChunkedArray, prefix: str) -> pa.ChunkedArray:
    return pc.binary_join_element_wise(pa.scalar(prefix, column.type), column, pa.scalar("", column.type))


def _write(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_raw_parquet(raw_dir, n_users: int, n_items: int, n_categories: int, seed: int, copies: int,
                      knobs: dict | None = None) -> dict:
    """Write raw_dir/reviews/part-NNNNN.parquet and raw_dir/meta/part-NNNNN.parquet, one pair per copy."""
    data = generate(n_users, n_items, n_categories, seed, knobs=knobs)
    reviews = pa.Table.from_pandas(data.reviews[list(REVIEW_COLUMNS)], preserve_index=False)
    nested = pa.list_(pa.list_(pa.string()))
    meta = pa.table({"asin": pa.array(data.meta["asin"], type=pa.string()),
                     "categories": pa.array(data.meta["categories"].tolist(), type=nested)})
    del data
    reviews = reviews.cast(pa.schema([("reviewerID", pa.string()), ("asin", pa.string()),
                                      ("unixReviewTime", pa.int64())]))
    width = len(str(max(copies - 1, 0)))
    raw_dir = Path(raw_dir)
    for copy in range(copies):
        prefix, name = f"{copy:0{width}d}", f"part-{copy:05d}.parquet"
        _write(reviews.set_column(0, "reviewerID", _prefixed(reviews.column("reviewerID"), prefix))
                      .set_column(1, "asin", _prefixed(reviews.column("asin"), prefix)), raw_dir / "reviews" / name)
        _write(meta.set_column(0, "asin", _prefixed(meta.column("asin"), prefix)), raw_dir / "meta" / name)
    return {"copies": copies, "reviews": int(reviews.num_rows) * copies, "items": int(meta.num_rows) * copies,
            "users": int(n_users) * copies, "reviews_per_copy": int(reviews.num_rows)}
