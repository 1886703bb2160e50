"""Remap raw string keys to dense integer IDs: items, categories, users, reviews.

Pure functions over pandas/pyarrow data; no file I/O. Conventions (docs/design.md):
IDs start at 1 (0 is padding); `item_id` follows sorted `asin`, `cate_id` sorted
category name, `user_id` sorted `reviewerID`; reviews sorted by (user_id, ts),
stable, so equal timestamps keep their input order. Items are the asins that
have both meta and at least one review, as in the original DIN scripts; reviews
whose asin has no meta row are dropped and counted.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from din_common.errors import InputError
from pipeline.id_encoding import encode_sorted


@dataclass
class RemapResult:
    items: pa.Table        # item_id, asin, cate_id
    categories: pa.Table   # cate_id, category
    users: pa.Table        # user_id, reviewerID, n_reviews
    reviews: pa.Table      # user_id, item_id, cate_id, ts  sorted by (user_id, ts)
    stats: dict = field(default_factory=dict)


def large_strings(series: pd.Series) -> pa.Array:
    """The column as one arrow string array (zero-copy for pandas' arrow-backed strings)."""
    array = pa.array(series)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(pa.large_string()) if array.type != pa.large_string() else array


def _ids_of(selected: np.ndarray) -> np.ndarray:
    """1-based rank among the selected codes (codes are in sorted order); 0 where not selected."""
    return np.where(selected, np.cumsum(selected), 0).astype(np.int64)


def _first_row_of(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Row of the first occurrence of each code (np.unique's index sort is stable)."""
    present, first = np.unique(codes, return_index=True)
    rows = np.zeros(n_codes, dtype=np.int64)
    rows[present] = first
    return rows


def _user_time_order(user_id: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Stable order by (user_id, ts): equal timestamps keep their input order."""
    if len(ts):
        # Flipping the sign bit maps int64 onto uint64 in the same order, so the offset from
        # the minimum cannot overflow (ts - ts.min() does when a timestamp is INT64_MIN).
        ts_offset = ts.view(np.uint64) ^ np.uint64(1 << 63)
        ts_offset -= ts_offset.min()
        if ts_offset.max() < 2**32:
            # One 64-bit key sorts twice as fast as lexsort on two keys. Built in place, and the
            # offsets let go before the sort, which holds copies of its own (the remap's peak memory).
            key = user_id.astype(np.uint64)
            key <<= np.uint64(32)
            key |= ts_offset
            del ts_offset
            return _stable_argsort(key)
    return np.lexsort((ts, user_id))


def _stable_argsort(key: np.ndarray) -> np.ndarray:
    """np.argsort(key, kind="stable"), computed as numpy's default sort plus a pass over equal keys.

    The default (introsort) uses the CPU's vector sort where numpy has one (AVX-512, AVX2) and is
    2-4x faster than the stable sort on 64-bit keys; it may only reorder rows of equal keys, so
    those runs, usually few (a user's reviews at one second), are put back in row order.
    """
    order = np.argsort(key)
    sorted_key = key[order]
    tie = sorted_key[1:] == sorted_key[:-1]
    del sorted_key
    if tie.any():
        in_run = np.zeros(len(key), dtype=bool)
        in_run[1:] |= tie
        in_run[:-1] |= tie
        positions = np.flatnonzero(in_run)
        run = np.cumsum(np.concatenate([[True], ~tie]))[positions]  # runs of equal keys are contiguous
        order[positions] = order[positions[np.lexsort((order[positions], run))]]
    return order


@dataclass
class ItemIndex:
    """The items: asins with meta and reviews, their categories, and item_id per distinct asin."""
    item_id_of_asin: np.ndarray   # per distinct asin code: item_id, 0 when not an item
    item_asins: pa.Array
    item_cate: np.ndarray         # cate_id per item (item_id - 1)
    category_names: pa.Array
    in_reviews: np.ndarray        # per distinct asin code
    in_meta: np.ndarray


def index_items(asins: pa.Array, in_reviews: np.ndarray, meta_asin_code: np.ndarray,
                meta_category: pd.Series) -> ItemIndex:
    """Items from the distinct asins (sorted), which of them reviews name, and meta's rows.

    `meta_asin_code[r]` is the code of meta row r's asin; the first meta row of an asin
    gives its category.
    """
    in_meta = np.bincount(meta_asin_code, minlength=len(asins)) > 0
    is_item = in_reviews & in_meta
    meta_row_of_item = _first_row_of(meta_asin_code, len(asins))[is_item]
    item_category_names = large_strings(meta_category).take(pa.array(meta_row_of_item))
    item_cate_code, category_names = encode_sorted(item_category_names)
    return ItemIndex(item_id_of_asin=_ids_of(is_item), item_asins=asins.filter(pa.array(is_item)),
                     item_cate=(item_cate_code + 1).astype(np.int32), category_names=category_names,
                     in_reviews=in_reviews, in_meta=in_meta)


def check_known_reviews(n_known: int, n_reviews: int, source: str) -> None:
    if n_known == 0:
        raise InputError(f"{source}: none of the {n_reviews} reviews has an asin that appears in meta.pkl "
                         "(expected the two files to describe the same products)")


def index_users(distinct_users: pa.Array, kept_reviews_of_user: np.ndarray, source: str) -> tuple:
    """(user keys, user_id per distinct user code, n_reviews per user) of the users with kept reviews."""
    has_kept = kept_reviews_of_user > 0
    n_reviews = kept_reviews_of_user[has_kept].astype(np.int32)
    if n_reviews.max() < 2:
        raise InputError(f"{source}: no user has 2 or more reviews with known asins "
                         "(each sample needs at least one earlier review as history)")
    return distinct_users.filter(pa.array(has_kept)), _ids_of(has_kept), n_reviews


def duplicate_rows(user_id: np.ndarray, item_id: np.ndarray, ts: np.ndarray) -> int:
    """Adjacent rows of one (user, item, time) in reviews sorted by (user_id, ts)."""
    return int(((user_id[1:] == user_id[:-1]) & (item_id[1:] == item_id[:-1]) & (ts[1:] == ts[:-1])).sum())


def sorted_reviews_table(user_id: np.ndarray, item_id: np.ndarray, ts: np.ndarray,
                         item_cate: np.ndarray) -> pa.Table:
    """reviews.parquet's rows of these reviews, sorted by (user_id, ts), ties in the given order."""
    order = _user_time_order(user_id, ts)
    user_id, item_id, ts = user_id[order], item_id[order], ts[order]
    cate_lookup = np.concatenate([[0], item_cate]).astype(np.int32)
    return pa.table({"user_id": pa.array(user_id), "item_id": pa.array(item_id),
                     "cate_id": pa.array(cate_lookup[item_id]), "ts": pa.array(ts)})


def key_tables(items: ItemIndex, user_keys: pa.Array, n_reviews: np.ndarray) -> dict[str, pa.Table]:
    """The items, categories and users tables."""
    n_items, n_cats, n_users = len(items.item_asins), len(items.category_names), len(user_keys)
    return {
        "items": pa.table({"item_id": pa.array(np.arange(1, n_items + 1, dtype=np.int32)),
                           "asin": items.item_asins.cast(pa.string()),
                           "cate_id": pa.array(items.item_cate)}),
        "categories": pa.table({"cate_id": pa.array(np.arange(1, n_cats + 1, dtype=np.int32)),
                                "category": items.category_names.cast(pa.string())}),
        "users": pa.table({"user_id": pa.array(np.arange(1, n_users + 1, dtype=np.int32)),
                           "reviewerID": user_keys.cast(pa.string()),
                           "n_reviews": pa.array(n_reviews)}),
    }


def remap_stats(reviews_in: int, reviews_kept: int, items: ItemIndex, n_reviews: np.ndarray,
                duplicates: int) -> dict:
    n_items = len(items.item_asins)
    return {
        "reviews_in": int(reviews_in),
        "reviews_kept": int(reviews_kept),
        "reviews_dropped_unknown_asin": int(reviews_in - reviews_kept),
        "unknown_asins": int(items.in_reviews.sum() - n_items),
        "meta_items_without_reviews": int(items.in_meta.sum() - n_items),
        "n_items": n_items,
        "n_cats": len(items.category_names),
        "n_users": len(n_reviews),
        "users_with_2plus_reviews": int((n_reviews >= 2).sum()),
        # Kept, as in the reference scripts (a re-posted review is still an event); counted here.
        "duplicate_user_item_time_rows": int(duplicates),
    }


def remap_ids(reviews: pd.DataFrame, meta: pd.DataFrame, *, source: str = "reviews.pkl") -> RemapResult:
    """Remap `reviews` (reviewerID, asin, unixReviewTime) with `meta` (asin, category)."""
    # The ids come from files someone sent: every string column is encoded by
    # pipeline.id_encoding (no hash the file can steer); the rest works on integer codes.
    n_rows = len(reviews)
    asin_code, asins = encode_sorted(pa.concat_arrays([large_strings(reviews["asin"]),
                                                       large_strings(meta["asin"])]))
    review_asin_code, meta_asin_code = asin_code[:n_rows], asin_code[n_rows:]
    items = index_items(asins, np.bincount(review_asin_code, minlength=len(asins)) > 0, meta_asin_code,
                        meta["category"])
    item_id_all = items.item_id_of_asin[review_asin_code]
    keep = item_id_all > 0
    n_known = int(keep.sum())
    check_known_reviews(n_known, n_rows, source)

    user_code, distinct_users = encode_sorted(large_strings(reviews["reviewerID"]))
    user_keys, user_id_of_code, n_reviews = index_users(
        distinct_users, np.bincount(user_code[keep], minlength=len(distinct_users)), source)
    reviews_table = sorted_reviews_table(user_id_of_code[user_code[keep]].astype(np.int32),
                                         item_id_all[keep].astype(np.int32),
                                         reviews["unixReviewTime"].to_numpy(dtype=np.int64)[keep], items.item_cate)
    columns = [reviews_table.column(name).to_numpy() for name in ("user_id", "item_id", "ts")]
    return RemapResult(**key_tables(items, user_keys, n_reviews), reviews=reviews_table,
                       stats=remap_stats(n_rows, n_known, items, n_reviews, duplicate_rows(*columns)))


def remap_ids_within(seconds: float, reviews: pd.DataFrame, meta: pd.DataFrame, *,
                     source: str = "reviews.pkl") -> RemapResult:
    """`remap_ids`, or one InputError if it takes longer than `seconds`.

    The ids come from files someone sent. `remap_ids` hashes them only under a
    per-run random key (pipeline.id_encoding), so they cannot be crafted to
    collide; this limit is the second line for whatever else could be slow.
    Arrow's kernels release the GIL, so the remap runs in a daemon thread and
    this one stops waiting at the limit (the thread ends with the process,
    which exits on the error).
    """
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = remap_ids(reviews, meta, source=source)
        except BaseException as error:  # noqa: BLE001  (re-raised in the caller's thread)
            outcome["error"] = error

    worker = threading.Thread(target=run, name="remap_ids", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise InputError(f"{source}: remapping its {len(reviews)} reviews took longer than {seconds:.0f} s "
                         "(ids crafted to collide in hash tables?): expected ordinary review ids")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def remap_time_limit(n_rows: int) -> float:
    """Generous for real data (1.7 M reviews remap in about a second), short for a crafted file."""
    return REMAP_BASE_S + REMAP_S_PER_MILLION_ROWS * n_rows / 1e6


REMAP_BASE_S, REMAP_S_PER_MILLION_ROWS = 30.0, 20.0
