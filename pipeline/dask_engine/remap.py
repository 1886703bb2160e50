"""RemapIds on a Dask cluster, with the local engine's tables byte for byte.

Each review partition is encoded on a worker (`pipeline.id_encoding`, as locally) to
codes into its own sorted distinct asins and reviewerIDs. Only those distinct keys
come to this process, which ranks them into the global item and user ids with the
local engine's functions (pipeline.remap) and sends each partition its small
code -> id maps. Workers then split their kept reviews into user-range buckets
(whole users, about `BUCKET_ROWS` reviews each); each bucket concatenates its pieces
in partition order (the input order, which breaks timestamp ties as locally) and
sorts them by (user_id, ts). Buckets stream into reviews.parquet in user order, one at
a time, through the row-group-aligned writer of pipeline.tasks.base.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.console import count, progress_line
from pipeline.dask_engine.cluster import cluster_client
from pipeline.id_encoding import encode_sorted
from pipeline.raw.parquet_files import read_review_file
from pipeline.remap import (
    check_known_reviews, duplicate_rows, index_items, index_users, key_tables, large_strings, remap_stats,
    sorted_reviews_table,
)
from pipeline.settings import Settings
from pipeline.tasks.base import write_parquet_atomic, write_parquet_stream_atomic

PARTITION_ROWS = 1 << 21
BUCKET_ROWS = 1 << 21
REVIEW_SCHEMA = sorted_reviews_table(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int64),
                                     np.zeros(0, np.int32)).schema


def frame_partitions(frame: pd.DataFrame, rows: int = PARTITION_ROWS) -> list[pd.DataFrame]:
    """A loaded review frame cut into row ranges (the pickle sources, read whole by the sandbox)."""
    return [frame.iloc[start:start + rows] for start in range(0, max(len(frame), 1), rows)]


def encode_partition(frame: pd.DataFrame) -> dict:
    """A partition's asins and reviewerIDs as codes into their sorted distinct values, and its times."""
    asin_code, asins = encode_sorted(large_strings(frame["asin"]))
    user_code, users = encode_sorted(large_strings(frame["reviewerID"]))
    # int32 codes: a partition holds far fewer than 2**31 distinct keys, and its codes live until the split.
    return {"asin_code": asin_code.astype(np.int32), "asins": asins, "user_code": user_code.astype(np.int32),
            "users": users, "ts": frame["unixReviewTime"].to_numpy(dtype=np.int64)}


def encode_file(path) -> dict:
    """encode_partition of one raw parquet review file, read and checked on the worker."""
    return encode_partition(read_review_file(path))


def distinct_keys(part: dict) -> tuple[pa.Array, pa.Array]:
    return part["asins"], part["users"]


def kept_reviews_per_user(part: dict, item_id_of_asin: np.ndarray) -> np.ndarray:
    """Reviews of each of the partition's distinct users whose asin is an item."""
    keep = item_id_of_asin[part["asin_code"]] > 0
    return np.bincount(part["user_code"][keep], minlength=len(part["users"]))


def split_by_bucket(part: dict, item_id_of_asin: np.ndarray, user_id_of_user: np.ndarray,
                    bucket_of_user_id: np.ndarray, n_buckets: int) -> list[dict]:
    """The partition's kept reviews as (user_id, item_id, ts), one piece per bucket, in input order."""
    item_id = item_id_of_asin[part["asin_code"]]
    keep = np.flatnonzero(item_id > 0)
    user_id = user_id_of_user[part["user_code"][keep]].astype(np.int32)
    columns = {"user_id": user_id, "item_id": item_id[keep].astype(np.int32), "ts": part["ts"][keep]}
    bucket = bucket_of_user_id[user_id]
    order = np.argsort(bucket, kind="stable")
    starts = np.searchsorted(bucket[order], np.arange(n_buckets + 1))
    return [{name: values[order[starts[b]:starts[b + 1]]] for name, values in columns.items()}
            for b in range(n_buckets)]


def piece(pieces: list, index: int) -> dict:
    return pieces[index]


def sorted_bucket(item_cate: np.ndarray, *pieces: dict) -> tuple[pa.Table, int]:
    """A bucket's reviews sorted as in reviews.parquet, and its duplicate (user, item, time) rows."""
    columns = {name: np.concatenate([p[name] for p in pieces]) for name in ("user_id", "item_id", "ts")}
    table = sorted_reviews_table(columns["user_id"], columns["item_id"], columns["ts"], item_cate)
    return table, duplicate_rows(*(table.column(name).to_numpy() for name in ("user_id", "item_id", "ts")))


def _buckets_of_users(n_reviews: np.ndarray) -> tuple[np.ndarray, int]:
    """Bucket per user_id (index 0 unused): consecutive users, about BUCKET_ROWS reviews a bucket."""
    before = np.cumsum(n_reviews) - n_reviews
    bucket = np.concatenate([[0], before // BUCKET_ROWS]).astype(np.int32)
    return bucket, int(bucket[-1]) + 1


def _global_codes(parts_values: list[pa.Array], extra: pa.Array | None = None) -> tuple[list[np.ndarray], pa.Array]:
    """Codes into the sorted union of the parts' distinct values, per part (and for `extra` last)."""
    arrays = parts_values + ([extra] if extra is not None else [])
    codes, distinct = encode_sorted(pa.concat_arrays(arrays))
    bounds = np.cumsum([0] + [len(a) for a in arrays])
    return [codes[bounds[i]:bounds[i + 1]] for i in range(len(arrays))], distinct


def remap_on_cluster(client, parts: list, meta: pd.DataFrame, settings: Settings, source: str) -> dict:
    """Write remap/{items,categories,users,reviews}.parquet from futures of encoded review partitions.

    Returns the statistics the local engine's stats.json holds.
    """
    keys = client.gather(client.map(distinct_keys, parts))
    asin_parts = [asins for asins, _ in keys]
    user_parts = [users for _, users in keys]
    del keys
    progress_line("RemapIds", f"{count(len(parts), 'partition')} encoded; distinct keys collected: "
                              f"{count(sum(map(len, asin_parts)), 'asin')} and "
                              f"{count(sum(map(len, user_parts)), 'reviewerID')} (summed over partitions)")

    asin_codes, asins = _global_codes(asin_parts, large_strings(meta["asin"]))
    meta_asin_code = asin_codes.pop()
    in_reviews = np.zeros(len(asins), dtype=bool)
    for codes in asin_codes:
        in_reviews[codes] = True
    items = index_items(asins, in_reviews, meta_asin_code, meta["category"])
    item_maps = client.scatter([items.item_id_of_asin[codes] for codes in asin_codes])

    kept = client.gather(client.map(kept_reviews_per_user, parts, item_maps))
    n_known = int(sum(counts.sum() for counts in kept))
    n_in = int(sum(client.gather(client.map(_row_count, parts))))
    check_known_reviews(n_known, n_in, source)
    user_codes, users = _global_codes(user_parts)
    kept_of_user = np.zeros(len(users), dtype=np.int64)
    for codes, counts in zip(user_codes, kept):
        kept_of_user[codes] += counts  # a part's codes are distinct (they index its distinct users)
    user_keys, user_id_of_code, n_reviews = index_users(users, kept_of_user, source)
    tables = key_tables(items, user_keys, n_reviews)
    progress_line("RemapIds", f"key tables: {count(len(items.item_asins), 'item')}, "
                              f"{count(len(items.category_names), 'category', 'categories')}, "
                              f"{count(len(user_keys), 'user')}; sorting reviews in user ranges")

    bucket_of_user, n_buckets = _buckets_of_users(n_reviews)
    bucket_of_user = client.scatter(bucket_of_user, broadcast=True)
    user_maps = client.scatter([user_id_of_code[codes] for codes in user_codes])
    splits = [client.submit(split_by_bucket, part, item_map, user_map, bucket_of_user, n_buckets)
              for part, item_map, user_map in zip(parts, item_maps, user_maps)]
    del parts
    item_cate = client.scatter(items.item_cate, broadcast=True)
    buckets = [client.submit(sorted_bucket, item_cate,
                             *[client.submit(piece, split, b, pure=False) for split in splits])
               for b in range(n_buckets)]
    del splits
    duplicates = []

    def bucket_tables():
        for index, bucket in enumerate(buckets):
            buckets[index] = None  # with `bucket` gone too, the worker frees it
            table, bucket_duplicates = bucket.result()
            del bucket
            duplicates.append(bucket_duplicates)
            yield table

    paths = settings.remap_tables()
    for name in ("items", "categories", "users"):
        write_parquet_atomic(tables[name], paths[name])
    write_parquet_stream_atomic(bucket_tables(), paths["reviews"], REVIEW_SCHEMA)
    return remap_stats(n_in, n_known, items, n_reviews, sum(duplicates))


def _row_count(part: dict) -> int:
    return len(part["ts"])


def remap_frames_on_cluster(settings: Settings, reviews: pd.DataFrame, meta: pd.DataFrame, source: str) -> dict:
    """remap_on_cluster of reviews loaded whole (the pickle sources), cut into partitions."""
    with cluster_client(settings.dask) as client:
        # Only the encoded parts stay referenced: each scattered slice is freed once encoded.
        parts = client.map(encode_partition, client.scatter(frame_partitions(reviews)))
        del reviews
        return remap_on_cluster(client, parts, meta, settings, source)


def remap_files_on_cluster(settings: Settings, files: list, meta: pd.DataFrame, source: str) -> dict:
    """remap_on_cluster of raw parquet review files, each read and checked on a worker as one partition."""
    with cluster_client(settings.dask) as client:
        return remap_on_cluster(client, client.map(encode_file, files), meta, settings, source)
