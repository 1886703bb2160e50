"""One shard's BuildSequences and WriteTFRecords work, given explicit settings.

The local engine runs these in the Luigi task's process; the dask engine
(pipeline.dask_engine.shards) runs the same functions on cluster workers, which
have no Luigi config, so everything they need arrives as arguments. Each writes
its data files atomically, then the shard's manifest (with `fingerprint`) last.
With the local engine BuildSequences also hands the samples it holds to
`write_tfrecords`, which then skips reading them back from parquet.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from din_common.atomic import atomic_path, write_json_atomic
from din_common.feature_spec import SPLITS
from pipeline.sequences import build_shard_samples
from pipeline.settings import Settings
from pipeline.tasks.base import SAMPLE_PARQUET_OPTIONS, read_parquet, reading_parquet, write_parquet_atomic
from pipeline.tfrecord_io import check_sample_ranges, write_samples_tfrecord

REVIEW_READ_BATCH = 1 << 20


def read_remap_for_shard(settings: Settings, shard: int) -> dict[str, np.ndarray]:
    """The shard's reviews (sorted as in reviews.parquet) and the item -> category lookup.

    Reads reviews.parquet in batches and keeps only the shard's rows, so a shard task's
    memory follows its shard, not the data set.
    """
    tables = settings.remap_tables()
    kept = {name: [] for name in ("user_id", "item_id", "cate_id", "ts")}
    with reading_parquet(tables["reviews"]) as reviews:
        for batch in reviews.iter_batches(REVIEW_READ_BATCH, columns=list(kept)):
            user_id = batch.column(0).to_numpy()
            rows = np.flatnonzero(user_id % settings.num_shards == shard)
            for index, name in enumerate(kept):
                kept[name].append(batch.column(index).to_numpy()[rows])
    items = read_parquet(tables["items"], ["item_id", "cate_id"])
    item_cate = np.zeros(items.num_rows + 1, dtype=np.int32)
    item_cate[items.column("item_id").to_numpy()] = items.column("cate_id").to_numpy()
    return {**{name: np.concatenate(parts) for name, parts in kept.items()}, "item_cate": item_cate}


def shard_samples(settings: Settings, shard: int) -> dict:
    """The shard's sample tables by split, built from the remap tables."""
    remap = read_remap_for_shard(settings, shard)
    n_items = len(remap["item_cate"]) - 1
    return build_shard_samples(remap["user_id"], remap["item_id"], remap["cate_id"], remap["ts"],
                               remap["item_cate"], n_items=n_items, maxlen=settings.maxlen,
                               seed=settings.seed, shard=shard)


def for_each_split(write: Callable[[str, Path], object], paths: dict[str, Path]) -> dict:
    """`write(split, path)` for every split at once, one thread each; their results by split.

    Each split has a file of its own, and what the writes spend their time in releases the GIL
    (pyarrow's parquet encoder, file writes, fsync): the splits overlap instead of each waiting
    for the previous one's fsync. All run to the end; an error is raised for the first split in
    order that failed, the one a split-by-split loop would have raised.
    """
    with ThreadPoolExecutor(len(paths)) as pool:
        futures = {split: pool.submit(write, split, path) for split, path in paths.items()}
    return {split: future.result() for split, future in futures.items()}


def write_sequences(settings: Settings, shard: int, fingerprint: str, tables: dict) -> dict:
    """sequences/{train,val,test}/part-NNNNN.parquet of one shard's `tables`, then its manifest; returns the manifest."""
    for_each_split(lambda split, path: write_parquet_atomic(tables[split], path, **SAMPLE_PARQUET_OPTIONS),
                   settings.shard_files(settings.sequences_dir, shard, ".parquet"))
    manifest = {"fingerprint": fingerprint, "shard": shard,
                "samples": {split: tables[split].num_rows for split in SPLITS}}
    write_json_atomic(settings.shard_manifest(settings.sequences_dir, shard), manifest)
    return manifest


def build_sequences(settings: Settings, shard: int, fingerprint: str) -> dict:
    """BuildSequences of one shard: its samples to parquet, then its manifest; returns the manifest."""
    return write_sequences(settings, shard, fingerprint, shard_samples(settings, shard))


def write_tfrecords(settings: Settings, shard: int, fingerprint: str, tables: dict | None = None) -> dict:
    """tfrecords/{train,val,test}/part-NNNNN.tfrecord of one shard's samples, then its manifest.

    The samples are `tables` when the caller still holds what it wrote to sequences/ (BuildSequences,
    pipeline.tasks.stage1), else they are read back from that parquet: the same values either way,
    so the same bytes. Errors name the parquet file, which holds those samples.
    """
    sources = settings.shard_files(settings.sequences_dir, shard, ".parquet")
    stats_path = settings.remap_dir / "stats.json"
    stats = json.loads(stats_path.read_text())

    def write(split: str, path: Path) -> dict:
        table = read_parquet(sources[split]) if tables is None else tables[split]
        check_sample_ranges(table, sources[split], stats["n_items"], stats["n_cats"], str(stats_path))
        with atomic_path(path) as tmp:
            records = write_samples_tfrecord(tmp, table, settings.prebatch)
        return {"samples": table.num_rows, "records": records, "bytes": path.stat().st_size}

    counts = for_each_split(write, settings.shard_files(settings.tfrecords_dir, shard, ".tfrecord"))
    manifest = {"fingerprint": fingerprint, "shard": shard, "splits": counts, "maxlen": settings.maxlen,
                "prebatch": settings.prebatch}
    write_json_atomic(settings.shard_manifest(settings.tfrecords_dir, shard), manifest)
    return manifest
