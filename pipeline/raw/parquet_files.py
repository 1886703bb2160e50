"""`[raw] source = parquet`: folders of parquet files, raw/reviews/*.parquet and raw/meta/*.parquet.

Reviews need the columns reviewerID, asin, unixReviewTime; meta asin and categories
(a list of lists of str, the category is categories[-1][-1]), as in the pickles. Each file
is checked by the pickle source's checks (pipeline.raw.pickles.check_reviews / check_meta),
so a problem is one InputError line naming the file and column. The dask engine reads
each review file as one partition on a worker; the local engine reads them all.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from din_common.errors import InputError
from pipeline.raw.frames import META_COLUMNS, REVIEW_COLUMNS
from pipeline.raw.pickles import check_meta, check_reviews

FOLDERS = ("reviews", "meta")


def parquet_files(raw_dir: Path, folder: str) -> list[Path]:
    return sorted((raw_dir / folder).glob("*.parquet"))


def input_files(raw_dir: Path) -> dict[str, Path]:
    """{folder/name: path} of every raw parquet file, for the raw fingerprint."""
    return {f"{folder}/{path.name}": path for folder in FOLDERS for path in parquet_files(raw_dir, folder)}


def _read(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        handle = pq.ParquetFile(path)
        names = handle.schema_arrow.names
        missing = [name for name in columns if name not in names]
        if missing:
            raise InputError(f"{path} has no column {missing[0]} (it has {', '.join(names[:20])}): expected the "
                             f"columns {', '.join(columns)}")
        return handle.read(columns=list(columns)).to_pandas()
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"{path} is not a readable parquet file ({str(error).splitlines()[0]}): expected parquet "
                         f"with the columns {', '.join(columns)}") from None


def read_review_file(path: Path) -> pd.DataFrame:
    """One checked review file: reviewerID, asin (str), unixReviewTime (int64)."""
    frames, _ = check_reviews([_read(path, REVIEW_COLUMNS)], path)
    return frames["reviews"]


def read_meta(raw_dir: Path) -> tuple[pd.DataFrame, dict]:
    """All meta files as one checked frame (asin, category; the first row of an asin wins) and its counts."""
    paths = parquet_files(raw_dir, "meta")
    frame = pd.concat([_read(path, META_COLUMNS) for path in paths], ignore_index=True)
    frames, info = check_meta([frame], raw_dir / "meta" / "*.parquet")
    return frames["meta"], {**info, "files": len(paths)}
