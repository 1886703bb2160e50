"""`[raw] source = remap-pickle`: the remap.pkl of the original DIN scripts turned back into reviews.pkl and meta.pkl.

remap.pkl holds integer ids plus the key lists that map them back to strings; it is read
in the sandbox (`REMAP_JOB`, checked by `check_remap` in the child), so one path downstream
handles every source. The pair is written atomically: on error no new pickle appears.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from din_common.errors import InputError
from pipeline import untrusted
from pipeline.compat import text_array
from pipeline.raw.frames import (
    EXPECTED_SECONDS, JOBS_MODULE, META_KINDS, REVIEW_COLUMNS, REVIEW_KINDS, check_frame, check_not_blank, existing_dir,
    integer_values, is_sequence, short_repr, shown, write_pickle_pair,
)

REMAP_FILE = "remap.pkl"
EXPECTED_REMAP = (
    "the 4 objects of the original DIN remap.pkl: reviews_df, cate_list, "
    "(user_count, item_count, cate_count, example_count), (asin_key, cate_key, revi_key)"
)


def convert_remap_pickle(raw_dir: str | os.PathLike) -> dict:
    """Convert the original DIN raw_dir/remap.pkl into reviews.pkl and meta.pkl; returns counts.

    remap.pkl holds, pickled back to back: reviews_df (0-based integer
    reviewerID/asin, unixReviewTime), cate_list (cate id per item id),
    (user_count, item_count, cate_count, example_count) and
    (asin_key, cate_key, revi_key) mapping ids back to the original strings.
    """
    raw_dir = existing_dir(raw_dir)
    frames, info = untrusted.load(raw_dir / REMAP_FILE, REMAP_JOB)
    meta = pd.DataFrame(
        {
            "asin": frames["meta"]["asin"].array,
            "categories": pd.Series([[[category]] for category in frames["meta"]["category"]], dtype=object),
        }
    )
    write_pickle_pair(raw_dir, frames["reviews"], meta)
    return info


def check_remap(objects: list, path) -> tuple[dict, dict]:
    """In the sandbox child: the 4 objects of remap.pkl checked and turned into reviews and (asin, category)."""
    reviews_df, cate_list, counts, keys = objects
    asin_key, cate_key, revi_key = _remap_keys(keys, path)
    cate_ids = _remap_cate_list(cate_list, path, len(asin_key), len(cate_key))
    check_frame(reviews_df, f"{path} reviews_df", REVIEW_COLUMNS, "reviews")
    user_ids = _remap_ids(reviews_df["reviewerID"], path, "reviewerID", "revi_key", len(revi_key))
    item_ids = _remap_ids(reviews_df["asin"], path, "asin", "asin_key", len(asin_key))
    times = integer_values(reviews_df["unixReviewTime"], f"{path} reviews_df", "unixReviewTime", EXPECTED_SECONDS)
    _check_remap_counts(counts, path, (len(revi_key), len(asin_key), len(cate_key), len(reviews_df)))

    reviews = pd.DataFrame(
        {
            "reviewerID": text_array(revi_key[user_ids]),
            "asin": text_array(asin_key[item_ids]),
            "unixReviewTime": times,
        }
    )
    meta = pd.DataFrame({"asin": text_array(asin_key), "category": text_array(cate_key[cate_ids])})
    info = {"users": len(revi_key), "items": len(asin_key), "categories": len(cate_key), "reviews_rows": len(reviews)}
    return {"reviews": reviews, "meta": meta}, info


def _remap_keys(keys: Any, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    names = ("asin_key", "cate_key", "revi_key")
    if not (isinstance(keys, (tuple, list)) and len(keys) == 3):
        raise InputError(
            f"{path} object 4 is {short_repr(keys)}: expected the tuple (asin_key, cate_key, revi_key)"
        )
    arrays = []
    for name, key in zip(names, keys):
        if not is_sequence(key) or len(key) == 0:
            raise InputError(f"{path} {name} is {short_repr(key)}: expected a non-empty list of str")
        array = pd.Series(list(key), dtype=object).to_numpy()
        kind = pd.api.types.infer_dtype(array, skipna=False)
        if kind != "string":
            position, value = next(((i, v) for i, v in enumerate(array) if not isinstance(v, str)), (0, array[0]))
            raise InputError(
                f"{path} {name} entry {position} is {shown(value)} ({type(value).__name__}): expected a list of str"
            )
        check_not_blank(array, f"{path} {name} entry")
        arrays.append(array)
    return tuple(arrays)


def _remap_cate_list(cate_list: Any, path: Path, n_items: int, n_cates: int) -> np.ndarray:
    values = np.asarray(cate_list) if is_sequence(cate_list) else None
    if values is None or values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise InputError(
            f"{path} cate_list is {short_repr(cate_list)}: expected a 1-D integer array (cate id per item id)"
        )
    if len(values) != n_items:
        raise InputError(
            f"{path} cate_list has {len(values)} entries but asin_key has {n_items}: expected one cate id per item id"
        )
    _check_id_range(values, path, "cate_list", "cate_key", n_cates, "entry")
    return values.astype(np.int64)


def _remap_ids(column: pd.Series, path: Path, name: str, key_name: str, n_keys: int) -> np.ndarray:
    ids = integer_values(column, f"{path} reviews_df", name, f"0-based integer ids into {key_name}")
    _check_id_range(ids, path, f"reviews_df column {name}", key_name, n_keys, "row")
    return ids


def _check_id_range(ids: np.ndarray, path: Path, where: str, key_name: str, n_keys: int, unit: str) -> None:
    bad = (ids < 0) | (ids >= n_keys)
    if bad.any():
        position = int(np.argmax(bad))
        raise InputError(
            f"{path} {where} {unit} {position} holds id {int(ids[position])}, outside {key_name} "
            f"({n_keys} entries): expected 0-based ids 0..{n_keys - 1}"
        )


def _check_remap_counts(counts: Any, path: Path, actual: tuple[int, int, int, int]) -> None:
    names = ("user_count", "item_count", "cate_count", "example_count")
    expected = "(user_count, item_count, cate_count, example_count) matching the key lists and reviews_df"
    if not (isinstance(counts, (tuple, list)) and len(counts) == 4):
        raise InputError(f"{path} object 3 is {short_repr(counts)}: expected {expected}")
    for name, claimed, real in zip(names, counts, actual):
        if isinstance(claimed, bool) or not isinstance(claimed, (int, np.integer)) or claimed != real:
            raise InputError(f"{path} {name} is {shown(claimed)} but the data has {real}: expected {expected}")


def _sample_remap() -> list[list]:
    ids = pd.DataFrame({"reviewerID": [0, 1], "asin": [1, 0], "unixReviewTime": [1, 2]})
    return [[ids, np.array([0, 0]), (2, 2, 1, 2), (["B1", "B2"], ["Cam"], ["A1", "A2"])]]


REMAP_JOB = untrusted.SandboxJob(
    "remap", JOBS_MODULE, check_remap, _sample_remap, 4, EXPECTED_REMAP,
    {"reviews": REVIEW_KINDS, "meta": META_KINDS}, ("users", "items", "categories", "reviews_rows"),
)
