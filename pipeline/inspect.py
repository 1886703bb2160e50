"""`python -m pipeline.inspect PATH`: look inside any stage-1 table.

PATH is a parquet file, a TFRecord shard, or a directory of them (e.g.
`data/sequences` or `data/sequences/train`). Prints the schema, the row count
and the first rows (saying which file and split they come from: a directory's
files are read train, val, test); for sample tables also the history-length
histogram, the time gaps from history entries to the target, and the label
balance per split.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from din_common.errors import InputError
from din_common.feature_spec import SPLITS

HISTORY_BUCKETS = (1, 2, 3, 4, 5, 6, 11, 21, 41)  # lower edges
GAP_QUANTILES = (0.1, 0.5, 0.9)
SECONDS_PER_DAY = 86400


def table_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.suffix in (".parquet", ".tfrecord") and ".tmp-" not in p.name),
                       key=_split_first)
        if files:
            return files
        raise InputError(f"{path}: no .parquet or .tfrecord files below this directory")
    raise InputError(f"{path}: no such file or directory")


def read_table(path: Path) -> pa.Table:
    if path.suffix == ".tfrecord":
        from pipeline.tfrecord_io import read_samples_tfrecord
        return read_samples_tfrecord(path)
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(f"{path}: not a readable parquet file ({error})") from None


def split_of(path: Path) -> str:
    return path.parent.name if path.parent.name in SPLITS else path.stem


def _split_first(path: Path):
    split = split_of(path)
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS)), str(path)


def rows_label(files: list[Path], rows: int) -> str:
    """`first 5 rows (train split, from .../train/part-00000.parquet):`"""
    first = files[0]
    split = split_of(first)
    where = f"{split} split, from {first}" if split in SPLITS else f"from {first}"
    return f"first {rows} rows ({where}):"


def history_histogram(table: pa.Table) -> dict[str, int]:
    lengths = pc.list_value_length(table.column("hist_item")).to_numpy()  # chunked: pyarrow 12 takes no arguments
    edges = np.array(HISTORY_BUCKETS)
    counts = np.bincount(np.searchsorted(edges, lengths, side="right") - 1, minlength=len(edges))
    labels = [f"{lo}" if hi - lo == 1 else f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])] + [f"{edges[-1]}+"]
    return dict(zip(labels, counts.tolist()))


def gap_quantiles_days(table: pa.Table) -> dict[str, list[float]]:
    """Quantiles (GAP_QUANTILES) of hist_gap in days: of each sample's most recent entry, and of all entries."""
    from pipeline.tfrecord_io import history_arrays
    offsets, gaps = history_arrays(table, "hist_gap")
    most_recent = gaps[offsets[1:][offsets[1:] > offsets[:-1]] - 1]
    return {name: (np.quantile(values, GAP_QUANTILES) / SECONDS_PER_DAY).round(1).tolist() if len(values) else []
            for name, values in (("most recent entry", most_recent), ("all entries", gaps))}


def describe(path: Path, rows: int = 5, out=sys.stdout) -> None:
    files = table_files(path)
    tables = [read_table(f) for f in files]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    print(f"{path}: {len(files)} file(s), {table.num_rows} rows", file=out)
    print("schema:", file=out)
    for field in table.schema:
        print(f"  {field.name}: {field.type}", file=out)
    print(rows_label(files, min(rows, table.num_rows)), file=out)
    print(table.slice(0, rows).to_pandas().to_string(), file=out)
    if "hist_item" in table.column_names:
        print("history length histogram:", file=out)
        for bucket, count in history_histogram(table).items():
            print(f"  {bucket:>6}: {count}", file=out)
        if "hist_gap" in table.column_names:
            labels = "/".join(f"p{round(q * 100)}" for q in GAP_QUANTILES)
            print(f"history time gap to the target, days ({labels}):", file=out)
            for name, quantiles in gap_quantiles_days(table).items():
                print(f"  {name}: {' / '.join(str(q) for q in quantiles) or 'none'}", file=out)
        print("label balance per split:", file=out)
        by_split: dict[str, list[int]] = {}
        for file, part in zip(files, tables):
            labels = part.column("label").to_numpy()
            totals = by_split.setdefault(split_of(file), [0, 0])
            totals[0] += int((labels == 1).sum())
            totals[1] += len(labels)
        for split, (positives, total) in by_split.items():
            share = positives / total if total else float("nan")
            print(f"  {split}: {total} samples, {positives} positive ({share:.1%})", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.inspect", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="parquet/TFRecord file or directory")
    parser.add_argument("--rows", type=int, default=5, help="how many first rows to show")
    args = parser.parse_args(argv)
    try:
        describe(args.path, args.rows)
    except InputError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
