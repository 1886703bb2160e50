"""What the parts of pipeline.raw share: the raw pair's columns and files, column checks, error wording, output.

  * the column names and file names of reviews.pkl / meta.pkl, and the column types of the
    clean frames the sandbox hands back (`REVIEW_KINDS`, `META_KINDS`);
  * the checks both the pickle loaders and the remap.pkl converter run on a frame
    (`check_frame`, `integer_values`, `is_sequence`) and the categories[-1][-1] rule
    (`category_of`, `category_problem`), shared with the Amazon JSON reader;
  * `shown` / `short_repr`: bounded text for a value from an untrusted file, for error lines;
  * `existing_dir` and `write_pickle_pair`: the converters' input check and atomic output.
pandas is imported inside the functions that use it: the `luigi` command's process imports this
module (through pipeline.settings and the RemapIds task) without needing pandas (pipeline.compat).
"""
from __future__ import annotations

import os
import reprlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from din_common.atomic import atomic_path, remove_file
from din_common.errors import InputError
from pipeline.compat import RAW_PICKLE_PROTOCOL

if TYPE_CHECKING:
    import pandas as pd

REVIEW_COLUMNS = ("reviewerID", "asin", "unixReviewTime")
META_COLUMNS = ("asin", "categories")
REVIEWS_FILE = "reviews.pkl"
META_FILE = "meta.pkl"
# The module the sandbox child imports to find a job by name (SandboxJob.module).
JOBS_MODULE = "pipeline.raw.sandbox_jobs"

EXPECTED_CATEGORIES = "a non-empty list of non-empty lists of str (the category is categories[-1][-1])"
EXPECTED_SECONDS = "integer seconds since 1970 (int64)"
EXPECTED_ID = "expected a non-blank id (not empty, not only whitespace)"

INT64_MIN, INT64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max
REVIEW_KINDS = {"reviewerID": "str", "asin": "str", "unixReviewTime": "int64"}
META_KINDS = {"asin": "str", "category": "str"}


def check_frame(frame: Any, path, required: tuple[str, ...], what: str) -> None:
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise InputError(
            f"{path} holds a {type(frame).__module__}.{type(frame).__qualname__}: "
            f"expected a pandas DataFrame with columns {', '.join(required)}"
        )
    for column in required:
        found = int((frame.columns == column).sum())
        if found == 0:
            raise InputError(
                f"{path} has no column {column!r} (columns found: {_list_columns(frame)}): "
                f"expected columns {', '.join(required)}"
            )
        if found > 1:
            raise InputError(f"{path} has {found} columns named {column!r}: expected exactly one")
    if len(frame) == 0:
        raise InputError(f"{path} has no rows: expected at least one row of {what}")


def _list_columns(frame: pd.DataFrame, limit: int = 20) -> str:
    names = [str(name) for name in frame.columns[:limit]]
    more = len(frame.columns) - limit
    return ", ".join(names) + (f", ... ({more} more)" if more > 0 else "") if names else "none"


def check_no_missing(column: pd.Series, path, name: str) -> None:
    missing = column.isna().to_numpy()
    if missing.any():
        first = int(np.argmax(missing))
        raise InputError(
            f"{path} column {name} has {int(missing.sum())} missing values (NaN/None), first at row {first}: "
            "expected a value in every row"
        )


def first_blank(values) -> int | None:
    """Index of the first empty or whitespace-only string of `values` (str, no missing), or None.

    A blank id is no id: every review whose reviewerID is "" would become one user.
    """
    array = pa.array(values)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    # utf8_is_space is false for "", so the empty strings are asked for separately.
    blank = pc.or_(pc.equal(pc.utf8_length(array), 0), pc.utf8_is_space(array))
    if not pc.any(blank).as_py():
        return None
    return int(np.argmax(blank.to_numpy(zero_copy_only=False)))


def check_not_blank(values, where: str) -> None:
    """One InputError naming the first empty or whitespace-only id; `where` is e.g. "<path> column asin row"."""
    position = first_blank(values)
    if position is not None:
        raise InputError(f"{where} {position} is {shown(values[position])}: {EXPECTED_ID}")


def integer_values(column: pd.Series, path, name: str, expected: str) -> np.ndarray:
    """Return the column as int64; integers only (no floats, strings, datetimes, booleans), none missing."""
    import pandas as pd

    dtype = column.dtype
    if not (isinstance(dtype, np.dtype) and dtype.kind in "iu"):  # numpy ints can't be missing
        check_no_missing(column, path, name)
    if pd.api.types.is_bool_dtype(dtype):
        raise InputError(f"{path} column {name} has dtype {dtype}: expected {expected}")
    if pd.api.types.is_integer_dtype(dtype):
        if pd.api.types.is_unsigned_integer_dtype(dtype) and len(column) and column.max() > INT64_MAX:
            raise InputError(f"{path} column {name} holds values above {INT64_MAX}: expected {expected}")
        return column.to_numpy(dtype=np.int64)
    if dtype == object:
        kind = pd.api.types.infer_dtype(column, skipna=False)
        if kind == "integer":
            try:
                return column.to_numpy(dtype=np.int64)
            except OverflowError:
                raise InputError(f"{path} column {name} holds integers beyond int64: expected {expected}") from None
        values = column.to_numpy()
        position, value = next(
            ((i, v) for i, v in enumerate(values) if isinstance(v, bool) or not isinstance(v, (int, np.integer))),
            (0, values[0]),
        )
        raise InputError(
            f"{path} column {name} row {position} holds {shown(value)} ({type(value).__name__}): expected {expected}"
        )
    hint = ""
    if pd.api.types.is_float_dtype(dtype):
        hint = " (if the values are whole seconds, convert with .astype('int64'))"
    elif pd.api.types.is_datetime64_any_dtype(dtype):
        hint = " (convert datetimes with (col - pd.Timestamp(0)) // pd.Timedelta('1s'))"
    elif pd.api.types.is_string_dtype(dtype):
        hint = f" (found text such as {column.iloc[0]!r})"
    raise InputError(f"{path} column {name} has dtype {dtype}: expected {expected}{hint}")


def category_of(value: Any) -> str | None:
    """categories[-1][-1] when `value` is a list of non-empty lists of str, else None."""
    if is_sequence(value) and len(value):
        inner = value[-1]
        if is_sequence(inner) and len(inner):
            leaf = inner[-1]
            if isinstance(leaf, str):
                return str(leaf)
    return None


def is_sequence(value: Any) -> bool:
    # A str is a sequence too, but "Books"[-1] would be "s": never accept one.
    if isinstance(value, np.ndarray):
        return value.ndim >= 1
    return isinstance(value, (list, tuple))


def category_problem(value: Any) -> str:
    """Say why `value` has no categories[-1][-1] (for a value category_of rejected)."""
    if isinstance(value, str):
        return f"is a plain string {shown(value)}, not a list of lists"
    if not is_sequence(value):
        if value is None or _is_missing_scalar(value):
            return "is missing"
        return f"is {shown(value)} ({type(value).__name__}), not a list"
    if len(value) == 0:
        return "is an empty list"
    inner = value[-1]
    if not is_sequence(inner):
        return f"has last element {shown(inner)} ({type(inner).__name__}), not a list"
    if len(inner) == 0:
        return "has an empty innermost list (categories[-1] is empty)"
    leaf = inner[-1]
    return f"has categories[-1][-1] = {shown(leaf)} ({type(leaf).__name__}), not a str"


def _is_missing_scalar(value: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def short_repr(value: Any, limit: int = 60) -> str:
    return f"{shown(value, limit)} ({type(value).__name__})"


class _BoundedRepr(reprlib.Repr):
    """repr that stops after a few levels and items: values come from untrusted pickles, where a
    small file can hold a list that references itself a million times over."""

    def __init__(self, limit: int):
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother = 3, limit, limit
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = 6

    def repr_instance(self, value: Any, level: int) -> str:
        # numpy/pandas containers would repr every element: show their type and size only.
        import pandas as pd

        if isinstance(value, (np.ndarray, pd.Series, pd.Index, pd.DataFrame)):
            return f"<{type(value).__name__} of shape {value.shape}>"
        return super().repr_instance(value, level)


def shown(value: Any, limit: int = 60) -> str:
    text = _BoundedRepr(limit).repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def existing_dir(raw_dir: str | os.PathLike) -> Path:
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise InputError(f"raw data directory {raw_dir} does not exist: expected a directory holding the raw files")
    return raw_dir


def write_pickle_pair(raw_dir: Path, reviews: pd.DataFrame, meta: pd.DataFrame) -> None:
    """Write reviews.pkl and meta.pkl so that either both new files appear or neither does."""
    reviews_path, meta_path = raw_dir / REVIEWS_FILE, raw_dir / META_FILE
    both_written = False
    try:
        with atomic_path(reviews_path) as reviews_tmp, atomic_path(meta_path) as meta_tmp:
            reviews.to_pickle(reviews_tmp, protocol=RAW_PICKLE_PROTOCOL)
            meta.to_pickle(meta_tmp, protocol=RAW_PICKLE_PROTOCOL)
            both_written = True
    except BaseException:
        if both_written:
            # meta.pkl was renamed into place but reviews.pkl failed to: a lone
            # or mismatched half of the pair must not survive.
            remove_file(meta_path)
            remove_file(reviews_path)
        raise
