"""reviews.pkl and meta.pkl given by the user: loaded in the sandbox, checked, returned as clean frames.

`load_reviews` / `load_meta` open the user's pickles in the sandbox of
`pipeline.untrusted.sandbox` (which reads them with `pipeline.untrusted.unpickler`
and runs `check_reviews` / `check_meta` in its child), and return clean frames
(`reviewerID, asin, unixReviewTime` and `asin, category`) plus counts for
stats.json. Every problem is one InputError line naming the file, the
column or row, and what was expected. `REVIEWS_JOB` / `META_JOB` declare the two files.
pandas is imported only by the checks, which run in the sandbox child: the RemapIds process
imports this module and starts the sandbox before it imports pandas (pipeline.untrusted.sandbox).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from din_common.errors import InputError
from pipeline import untrusted
from pipeline.compat import as_text, is_arrow_string_dtype, text_array
from pipeline.raw.frames import (
    EXPECTED_CATEGORIES, EXPECTED_SECONDS, JOBS_MODULE, META_COLUMNS, META_KINDS, REVIEW_COLUMNS, REVIEW_KINDS,
    category_of, category_problem, check_frame, check_no_missing, check_not_blank, integer_values, shown,
)

if TYPE_CHECKING:
    import pandas as pd

EXPECTED_REVIEWS = "a pandas DataFrame of reviews (reviewerID, asin, unixReviewTime) written by DataFrame.to_pickle"
EXPECTED_META = "a pandas DataFrame of items (asin, categories) written by DataFrame.to_pickle"


def load_reviews(path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """Load reviews.pkl: returns (frame with reviewerID str, asin str, unixReviewTime int64; info)."""
    frames, info = untrusted.load(path, REVIEWS_JOB)
    return frames["reviews"], info


def load_raw_pickles(reviews_path, meta_path) -> tuple[tuple[pd.DataFrame, dict], tuple[pd.DataFrame, dict]]:
    """load_reviews and load_meta at once (their sandbox processes start together)."""
    (reviews, review_info), (meta, meta_info) = untrusted.load_many(
        [(reviews_path, REVIEWS_JOB), (meta_path, META_JOB)]
    )
    return (reviews["reviews"], review_info), (meta["meta"], meta_info)


def check_reviews(objects: list, path) -> tuple[dict, dict]:
    """In the sandbox child: the object of reviews.pkl checked and cleaned."""
    import pandas as pd

    frame = objects[0]
    check_frame(frame, path, REVIEW_COLUMNS, "reviews")
    reviews = pd.DataFrame(
        {
            "reviewerID": _string_values(frame["reviewerID"], path, "reviewerID"),
            "asin": _string_values(frame["asin"], path, "asin"),
            "unixReviewTime": integer_values(frame["unixReviewTime"], path, "unixReviewTime", EXPECTED_SECONDS),
        }
    )
    return {"reviews": reviews}, {"rows": len(reviews)}


def load_meta(path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """Load meta.pkl: returns (frame with asin str, category str; info).

    category is `categories[-1][-1]` as in the original DIN preprocessing.
    Rows repeating an earlier asin are dropped (the first wins) and counted in
    info["duplicate_meta_asins_dropped"].
    """
    frames, info = untrusted.load(path, META_JOB)
    return frames["meta"], info


def check_meta(objects: list, path) -> tuple[dict, dict]:
    """In the sandbox child: the object of meta.pkl checked, reduced to (asin, category)."""
    import pandas as pd

    frame = objects[0]
    check_frame(frame, path, META_COLUMNS, "items")
    asins = _string_values(frame["asin"], path, "asin")
    first_seen = ~pd.Series(asins).duplicated(keep="first").to_numpy()
    positions = np.flatnonzero(first_seen)
    kept_asins = asins[positions]
    categories = _last_categories(frame["categories"], positions, kept_asins, path)
    meta = pd.DataFrame({"asin": kept_asins, "category": text_array(categories)})
    info = {"rows": len(meta), "duplicate_meta_asins_dropped": int(len(frame) - len(positions))}
    return {"meta": meta}, info


def _string_values(column: pd.Series, path, name: str) -> pd.api.extensions.ExtensionArray:
    """Return the column as a pandas `str` array of ids: strings only (no numbers), none missing or blank."""
    values = _strings_of(column, path, name)
    check_not_blank(values, f"{path} column {name} row")
    return values


def _strings_of(column: pd.Series, path, name: str) -> pd.api.extensions.ExtensionArray:
    import pandas as pd

    dtype = column.dtype
    if dtype == object and pd.api.types.infer_dtype(column, skipna=False) == "string":
        # The common case, checked in one pass: all str means none missing.
        return as_text(column)
    check_no_missing(column, path, name)
    if isinstance(dtype, pd.CategoricalDtype):
        # Categorical of strings is fine; check its categories, not every row.
        # From the values, not Index.inferred_type: never trust a cache that came with the file.
        if pd.api.types.infer_dtype(np.asarray(dtype.categories, dtype=object), skipna=False) != "string":
            _raise_not_strings(pd.Series(dtype.categories), path, name, "category value")
        return as_text(column)
    if isinstance(dtype, pd.StringDtype) or is_arrow_string_dtype(dtype):
        return as_text(column)
    if dtype == object:
        _raise_not_strings(column, path, name, "row")
    raise InputError(f"{path} column {name} has dtype {dtype}: expected strings (str), e.g. {name} ids as text")


def _raise_not_strings(values: pd.Series, path, name: str, what: str) -> None:
    # Error path only: stops at the first value that is not a str.
    position, value = next(
        ((i, v) for i, v in enumerate(values.to_numpy()) if not isinstance(v, str)), (0, values.iloc[0])
    )
    raise InputError(
        f"{path} column {name} {what} {position} holds {shown(value)} ({type(value).__name__}): expected strings (str)"
    )


def _last_categories_vectorised(values: list, positions: np.ndarray) -> list[str] | None:
    """categories[-1][-1] of the rows at `positions` with arrow kernels; None if any row is unusual.

    The per-row path below is ~10x slower but explains exactly what is wrong with a row.
    """
    picked = [values[p] for p in positions]
    try:
        # Arrow would read a str as a list of characters: leave strings to the per-row path.
        if any(isinstance(v, str) or isinstance(v[-1], str) for v in picked):
            return None
        nested = pa.array(picked, type=pa.list_(pa.list_(pa.string())))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, IndexError, KeyError):
        return None
    if nested.null_count or len(nested) == 0:
        return None
    outer_offsets = nested.offsets.to_numpy()
    inner = nested.values
    last_inner = outer_offsets[1:] - 1
    if (np.diff(outer_offsets) == 0).any() or inner.null_count:
        return None
    inner_offsets = inner.offsets.to_numpy()
    if (inner_offsets[last_inner + 1] - inner_offsets[last_inner] == 0).any():
        return None
    leaves = inner.values.take(pa.array(inner_offsets[last_inner + 1] - 1))
    if leaves.null_count:
        return None
    return leaves.to_pylist()


def _last_categories(column: pd.Series, positions: np.ndarray, asins, path) -> list[str]:
    values = column.tolist()  # lists for object and pyarrow list columns alike
    fast = _last_categories_vectorised(values, positions)
    if fast is not None:
        return fast
    categories = [category_of(values[position]) for position in positions]
    if None in categories:
        bad = categories.index(None)
        position = int(positions[bad])
        raise InputError(
            f"{path} column categories row {position} (asin {asins[bad]!r}) {category_problem(values[position])}: "
            f"expected {EXPECTED_CATEGORIES}"
        )
    return categories


def _sample_reviews() -> list[list]:
    import pandas as pd

    frame = pd.DataFrame({"reviewerID": ["A1", "A2"], "asin": ["B1", "B2"], "unixReviewTime": np.array([1, 2])})
    return [[frame], [frame.astype({"reviewerID": object, "asin": object})]]


def _sample_meta() -> list[list]:
    import pandas as pd

    frame = pd.DataFrame({"asin": ["B1", "B2"], "categories": pd.Series([[["E", "Cam"]], [["TV"]]], dtype=object)})
    return [[frame], [frame.astype({"asin": object})]]


REVIEWS_JOB = untrusted.SandboxJob(
    "reviews", JOBS_MODULE, check_reviews, _sample_reviews, 1, EXPECTED_REVIEWS, {"reviews": REVIEW_KINDS}, ("rows",)
)
META_JOB = untrusted.SandboxJob(
    "meta", JOBS_MODULE, check_meta, _sample_meta, 1, EXPECTED_META, {"meta": META_KINDS},
    ("rows", "duplicate_meta_asins_dropped"),
)
