"""Raw input: read and check reviews.pkl/meta.pkl, and make them from other sources.

This module owns the "Raw input" contract of docs/design.md:
  * `load_reviews` / `load_meta` open the user's pickles in the sandbox of
    `pipeline.untrusted.sandbox` (which reads them with `pipeline.untrusted.unpickler`
    and runs the `check_*` functions below in its child), and return clean frames
    (`reviewerID, asin, unixReviewTime` and `asin, category`) plus counts for
    stats.json. Every problem is one InputError line naming the file, the
    column or row, and what was expected.
  * `convert_amazon_json` turns the Amazon product-data files
    (`reviews_*.json[.gz]`, `meta_*.json[.gz]`) into the two pickles.
  * `convert_remap_pickle` turns the `remap.pkl` of the original DIN scripts
    (integer ids plus key lists) back into the two pickles, so one path
    downstream handles every source.
Both converters write the pair atomically: on error no new pickle appears.
"""
from __future__ import annotations

import ast
import gzip
import json
import os
import re
import reprlib
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from din_common.atomic import atomic_path, remove_file
from din_common.errors import InputError
from pipeline import untrusted
from pipeline.compat import RAW_PICKLE_PROTOCOL, as_text, is_arrow_string_dtype, text_array

REVIEW_COLUMNS = ("reviewerID", "asin", "unixReviewTime")
META_COLUMNS = ("asin", "categories")
REVIEWS_FILE = "reviews.pkl"
META_FILE = "meta.pkl"
REMAP_FILE = "remap.pkl"

EXPECTED_REVIEWS = "a pandas DataFrame of reviews (reviewerID, asin, unixReviewTime) written by DataFrame.to_pickle"
EXPECTED_META = "a pandas DataFrame of items (asin, categories) written by DataFrame.to_pickle"
EXPECTED_CATEGORIES = "a non-empty list of non-empty lists of str (the category is categories[-1][-1])"
EXPECTED_SECONDS = "integer seconds since 1970 (int64)"
EXPECTED_REMAP = (
    "the 4 objects of the original DIN remap.pkl: reviews_df, cate_list, "
    "(user_count, item_count, cate_count, example_count), (asin_key, cate_key, revi_key)"
)

_INT64_MAX = np.iinfo(np.int64).max


# ---------------------------------------------------------------- loaders


def load_reviews(path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """Load reviews.pkl: returns (frame with reviewerID str, asin str, unixReviewTime int64; info)."""
    frames, info = untrusted.load(path, SANDBOX_JOBS["reviews"])
    return frames["reviews"], info


def load_raw_pickles(reviews_path, meta_path) -> tuple[tuple[pd.DataFrame, dict], tuple[pd.DataFrame, dict]]:
    """load_reviews and load_meta at once (their sandbox processes start together)."""
    (reviews, review_info), (meta, meta_info) = untrusted.load_many(
        [(reviews_path, SANDBOX_JOBS["reviews"]), (meta_path, SANDBOX_JOBS["meta"])]
    )
    return (reviews["reviews"], review_info), (meta["meta"], meta_info)


def check_reviews(objects: list, path) -> tuple[dict, dict]:
    """In the sandbox child: the object of reviews.pkl checked and cleaned."""
    frame = objects[0]
    _check_frame(frame, path, REVIEW_COLUMNS, "reviews")
    reviews = pd.DataFrame(
        {
            "reviewerID": _string_values(frame["reviewerID"], path, "reviewerID"),
            "asin": _string_values(frame["asin"], path, "asin"),
            "unixReviewTime": _integer_values(frame["unixReviewTime"], path, "unixReviewTime", EXPECTED_SECONDS),
        }
    )
    return {"reviews": reviews}, {"rows": len(reviews)}


def load_meta(path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """Load meta.pkl: returns (frame with asin str, category str; info).

    category is `categories[-1][-1]` as in the original DIN preprocessing.
    Rows repeating an earlier asin are dropped (the first wins) and counted in
    info["duplicate_meta_asins_dropped"].
    """
    frames, info = untrusted.load(path, SANDBOX_JOBS["meta"])
    return frames["meta"], info


def check_meta(objects: list, path) -> tuple[dict, dict]:
    """In the sandbox child: the object of meta.pkl checked, reduced to (asin, category)."""
    frame = objects[0]
    _check_frame(frame, path, META_COLUMNS, "items")
    asins = _string_values(frame["asin"], path, "asin")
    first_seen = ~pd.Series(asins).duplicated(keep="first").to_numpy()
    positions = np.flatnonzero(first_seen)
    kept_asins = asins[positions]
    categories = _last_categories(frame["categories"], positions, kept_asins, path)
    meta = pd.DataFrame({"asin": kept_asins, "category": text_array(categories)})
    info = {"rows": len(meta), "duplicate_meta_asins_dropped": int(len(frame) - len(positions))}
    return {"meta": meta}, info


def _check_frame(frame: Any, path, required: tuple[str, ...], what: str) -> None:
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


def _check_no_missing(column: pd.Series, path, name: str) -> None:
    missing = column.isna().to_numpy()
    if missing.any():
        first = int(np.argmax(missing))
        raise InputError(
            f"{path} column {name} has {int(missing.sum())} missing values (NaN/None), first at row {first}: "
            "expected a value in every row"
        )


def _string_values(column: pd.Series, path, name: str) -> pd.api.extensions.ExtensionArray:
    """Return the column as a pandas `str` array; strings only (no numbers), none missing."""
    dtype = column.dtype
    if dtype == object and pd.api.types.infer_dtype(column, skipna=False) == "string":
        # The common case, checked in one pass: all str means none missing.
        return as_text(column)
    _check_no_missing(column, path, name)
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
        f"{path} column {name} {what} {position} holds {_shown(value)} ({type(value).__name__}): expected strings (str)"
    )


def _integer_values(column: pd.Series, path, name: str, expected: str) -> np.ndarray:
    """Return the column as int64; integers only (no floats, strings, datetimes, booleans), none missing."""
    dtype = column.dtype
    if not (isinstance(dtype, np.dtype) and dtype.kind in "iu"):  # numpy ints can't be missing
        _check_no_missing(column, path, name)
    if pd.api.types.is_bool_dtype(dtype):
        raise InputError(f"{path} column {name} has dtype {dtype}: expected {expected}")
    if pd.api.types.is_integer_dtype(dtype):
        if pd.api.types.is_unsigned_integer_dtype(dtype) and len(column) and column.max() > _INT64_MAX:
            raise InputError(f"{path} column {name} holds values above {_INT64_MAX}: expected {expected}")
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
            f"{path} column {name} row {position} holds {_shown(value)} ({type(value).__name__}): expected {expected}"
        )
    hint = ""
    if pd.api.types.is_float_dtype(dtype):
        hint = " (if the values are whole seconds, convert with .astype('int64'))"
    elif pd.api.types.is_datetime64_any_dtype(dtype):
        hint = " (convert datetimes with (col - pd.Timestamp(0)) // pd.Timedelta('1s'))"
    elif pd.api.types.is_string_dtype(dtype):
        hint = f" (found text such as {column.iloc[0]!r})"
    raise InputError(f"{path} column {name} has dtype {dtype}: expected {expected}{hint}")


def _category_of(value: Any) -> str | None:
    """categories[-1][-1] when `value` is a list of non-empty lists of str, else None."""
    if _is_sequence(value) and len(value):
        inner = value[-1]
        if _is_sequence(inner) and len(inner):
            leaf = inner[-1]
            if isinstance(leaf, str):
                return str(leaf)
    return None


def _is_sequence(value: Any) -> bool:
    # A str is a sequence too, but "Books"[-1] would be "s": never accept one.
    if isinstance(value, np.ndarray):
        return value.ndim >= 1
    return isinstance(value, (list, tuple))


def _category_problem(value: Any) -> str:
    """Say why `value` has no categories[-1][-1] (for a value _category_of rejected)."""
    if isinstance(value, str):
        return f"is a plain string {_shown(value)}, not a list of lists"
    if not _is_sequence(value):
        if value is None or _is_missing_scalar(value):
            return "is missing"
        return f"is {_shown(value)} ({type(value).__name__}), not a list"
    if len(value) == 0:
        return "is an empty list"
    inner = value[-1]
    if not _is_sequence(inner):
        return f"has last element {_shown(inner)} ({type(inner).__name__}), not a list"
    if len(inner) == 0:
        return "has an empty innermost list (categories[-1] is empty)"
    leaf = inner[-1]
    return f"has categories[-1][-1] = {_shown(leaf)} ({type(leaf).__name__}), not a str"


def _is_missing_scalar(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


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
    categories = [_category_of(values[position]) for position in positions]
    if None in categories:
        bad = categories.index(None)
        position = int(positions[bad])
        raise InputError(
            f"{path} column categories row {position} (asin {asins[bad]!r}) {_category_problem(values[position])}: "
            f"expected {EXPECTED_CATEGORIES}"
        )
    return categories


# ---------------------------------------------------------------- Amazon JSON


def convert_amazon_json(raw_dir: str | os.PathLike) -> dict:
    """Convert the one reviews_*.json[.gz] and meta_*.json[.gz] in raw_dir to reviews.pkl and meta.pkl.

    Reviews lines are JSON; meta lines are JSON or Python literals (the 2014
    Amazon files), read with ast.literal_eval, never eval. Returns counts.
    """
    raw_dir = _existing_dir(raw_dir)
    reviews_source = _find_one_source(raw_dir, "reviews_")
    meta_source = _find_one_source(raw_dir, "meta_")
    reviews = _parse_reviews(reviews_source)
    meta, literal_lines = _parse_meta(meta_source)
    _write_pickle_pair(raw_dir, reviews, meta)
    return {
        "reviews_source": reviews_source.name,
        "meta_source": meta_source.name,
        "reviews_rows": len(reviews),
        "meta_rows": len(meta),
        "meta_python_literal_lines": literal_lines,
    }


def _existing_dir(raw_dir: str | os.PathLike) -> Path:
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise InputError(f"raw data directory {raw_dir} does not exist: expected a directory holding the raw files")
    return raw_dir


def _find_one_source(raw_dir: Path, prefix: str) -> Path:
    pattern = re.compile(re.escape(prefix) + r".+\.json(\.gz)?")
    found = sorted(path for path in raw_dir.iterdir() if path.is_file() and pattern.fullmatch(path.name))
    if len(found) == 1:
        return found[0]
    wanted = f"{prefix}*.json or {prefix}*.json.gz"
    if not found:
        names = sorted(path.name for path in raw_dir.iterdir())
        present = ", ".join(names[:20]) + (f", ... ({len(names) - 20} more)" if len(names) > 20 else "") or "nothing"
        raise InputError(f"{raw_dir} has no {wanted} file (found: {present}): expected exactly one")
    raise InputError(
        f"{raw_dir} has {len(found)} {wanted} files ({', '.join(p.name for p in found)}): expected exactly one"
    )


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line), streaming; unreadable input becomes InputError."""
    compressed = path.name.endswith(".gz")
    opener = gzip.open if compressed else open
    line_number = 0
    try:
        # Bytes, decoded line by line, so a bad byte is blamed on its own line
        # (a text wrapper decodes ahead in 8 KiB chunks).
        with opener(path, "rb") as handle:
            for line_number, raw_line in enumerate(handle, start=1):
                try:
                    line = raw_line.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise InputError(
                        f"{path} line {line_number} is not UTF-8 text ({error.reason} at byte {error.start}): "
                        "expected UTF-8 JSON lines"
                    ) from None
                yield line_number, line
    except (OSError, EOFError, zlib.error) as error:
        if not compressed:
            raise InputError(f"cannot read {path} ({error}): expected a readable text file") from None
        raise InputError(
            f"{path} is a corrupt gzip file, failing at line {line_number + 1} ({error}): "
            "expected a complete gzip-compressed file of JSON lines"
        ) from None


_decode_json = json.JSONDecoder().decode
_EXPECTED_REVIEW_LINE = "one JSON object per line with reviewerID (str), asin (str) and unixReviewTime (int)"


def _parse_reviews(path: Path) -> pd.DataFrame:
    reviewer_ids, asins, times, overall = [], [], [], []
    # The loop is the cost of converting millions of lines: only cheap checks
    # here; _raise_review_problem works out the message when one fails.
    for line_number, line in _numbered_lines(path):
        try:
            record = _decode_json(line)
            reviewer_id, asin, seconds = record["reviewerID"], record["asin"], record["unixReviewTime"]
        except json.JSONDecodeError as error:
            if not line.strip():
                continue
            raise InputError(
                f"{path} line {line_number} is not valid JSON ({error.msg} at column {error.colno}): "
                f"expected {_EXPECTED_REVIEW_LINE}"
            ) from None
        except (KeyError, TypeError, IndexError):  # not an object, or a key missing
            _raise_review_problem(record, f"{path} line {line_number}")
        # type() rather than isinstance: a bool is not a timestamp.
        if type(reviewer_id) is not str or type(asin) is not str or type(seconds) is not int or not (
            -_INT64_MAX <= seconds <= _INT64_MAX
        ):
            _raise_review_problem(record, f"{path} line {line_number}")
        reviewer_ids.append(reviewer_id)
        asins.append(asin)
        times.append(seconds)
        score = record.get("overall")
        overall.append(score if type(score) in (float, int) else np.nan)
    if not reviewer_ids:
        raise InputError(f"{path} has no reviews: expected {_EXPECTED_REVIEW_LINE}")
    columns = {
        "reviewerID": text_array(reviewer_ids),
        "asin": text_array(asins),
        "unixReviewTime": np.array(times, dtype=np.int64),
    }
    scores = np.array(overall, dtype=np.float64)
    if not np.isnan(scores).all():
        columns["overall"] = scores
    return pd.DataFrame(columns)


def _raise_review_problem(record: Any, where: str) -> None:
    if not isinstance(record, dict):
        raise InputError(f"{where} holds a {type(record).__name__}: expected {_EXPECTED_REVIEW_LINE}")
    _field(record, "reviewerID", str, where, _EXPECTED_REVIEW_LINE)
    _field(record, "asin", str, where, _EXPECTED_REVIEW_LINE)
    _field(record, "unixReviewTime", int, where, _EXPECTED_REVIEW_LINE)
    raise AssertionError(f"{where}: no problem found in {record!r}")  # unreachable unless the checks disagree


def _field(record: dict, key: str, kind: type, where: str, expected: str) -> Any:
    if key not in record:
        raise InputError(f"{where} has no key {key!r}: expected {expected}")
    value = record[key]
    if kind is int:
        # bool is an int subclass; and the column is int64.
        ok = isinstance(value, int) and not isinstance(value, bool) and -_INT64_MAX <= value <= _INT64_MAX
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise InputError(f"{where} has {key} = {value!r} ({type(value).__name__}): expected {expected}")
    return value


def _parse_meta(path: Path) -> tuple[pd.DataFrame, int]:
    expected = (
        "one JSON object or Python dict literal per line with asin (str) and "
        "categories (a non-empty list of non-empty lists of str)"
    )
    asins, categories, titles = [], [], []
    has_title = False
    literal_lines = 0
    for line_number, line in _numbered_lines(path):
        if not line.strip():
            continue
        where = f"{path} line {line_number}"
        record, was_literal = _parse_meta_line(line, where, expected)
        literal_lines += was_literal
        if not isinstance(record, dict):
            raise InputError(f"{where} holds a {type(record).__name__}: expected {expected}")
        asins.append(_field(record, "asin", str, where, expected))
        category_lists = record.get("categories")
        if _category_of(category_lists) is None:
            raise InputError(f"{where} (asin {asins[-1]!r}): categories {_category_problem(category_lists)}: "
                             f"expected {EXPECTED_CATEGORIES}")
        categories.append(category_lists)
        title = record.get("title")
        has_title = has_title or isinstance(title, str)
        titles.append(title if isinstance(title, str) else None)
    if not asins:
        raise InputError(f"{path} has no items: expected {expected}")
    columns = {"asin": text_array(asins), "categories": pd.Series(categories, dtype=object)}
    if has_title:
        columns["title"] = text_array(titles)
    return pd.DataFrame(columns), literal_lines


def _parse_meta_line(line: str, where: str, expected: str) -> tuple[Any, bool]:
    try:
        return json.loads(line), False
    except json.JSONDecodeError:
        pass
    try:
        # The 2014 meta files are Python literals ({'asin': '...'}); literal_eval
        # builds only literals and can't call anything.
        return ast.literal_eval(line.strip()), True
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"{where} is neither JSON nor a Python literal ({detail}): expected {expected}") from None


# ---------------------------------------------------------------- DIN remap.pkl


def convert_remap_pickle(raw_dir: str | os.PathLike) -> dict:
    """Convert the original DIN raw_dir/remap.pkl into reviews.pkl and meta.pkl; returns counts.

    remap.pkl holds, pickled back to back: reviews_df (0-based integer
    reviewerID/asin, unixReviewTime), cate_list (cate id per item id),
    (user_count, item_count, cate_count, example_count) and
    (asin_key, cate_key, revi_key) mapping ids back to the original strings.
    """
    raw_dir = _existing_dir(raw_dir)
    frames, info = untrusted.load(raw_dir / REMAP_FILE, SANDBOX_JOBS["remap"])
    meta = pd.DataFrame(
        {
            "asin": frames["meta"]["asin"].array,
            "categories": pd.Series([[[category]] for category in frames["meta"]["category"]], dtype=object),
        }
    )
    _write_pickle_pair(raw_dir, frames["reviews"], meta)
    return info


def check_remap(objects: list, path) -> tuple[dict, dict]:
    """In the sandbox child: the 4 objects of remap.pkl checked and turned into reviews and (asin, category)."""
    reviews_df, cate_list, counts, keys = objects
    asin_key, cate_key, revi_key = _remap_keys(keys, path)
    cate_ids = _remap_cate_list(cate_list, path, len(asin_key), len(cate_key))
    _check_frame(reviews_df, f"{path} reviews_df", REVIEW_COLUMNS, "reviews")
    user_ids = _remap_ids(reviews_df["reviewerID"], path, "reviewerID", "revi_key", len(revi_key))
    item_ids = _remap_ids(reviews_df["asin"], path, "asin", "asin_key", len(asin_key))
    times = _integer_values(reviews_df["unixReviewTime"], f"{path} reviews_df", "unixReviewTime", EXPECTED_SECONDS)
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
            f"{path} object 4 is {_short_repr(keys)}: expected the tuple (asin_key, cate_key, revi_key)"
        )
    arrays = []
    for name, key in zip(names, keys):
        if not _is_sequence(key) or len(key) == 0:
            raise InputError(f"{path} {name} is {_short_repr(key)}: expected a non-empty list of str")
        array = pd.Series(list(key), dtype=object).to_numpy()
        kind = pd.api.types.infer_dtype(array, skipna=False)
        if kind != "string":
            position, value = next(((i, v) for i, v in enumerate(array) if not isinstance(v, str)), (0, array[0]))
            raise InputError(
                f"{path} {name} entry {position} is {_shown(value)} ({type(value).__name__}): expected a list of str"
            )
        arrays.append(array)
    return tuple(arrays)


def _remap_cate_list(cate_list: Any, path: Path, n_items: int, n_cates: int) -> np.ndarray:
    values = np.asarray(cate_list) if _is_sequence(cate_list) else None
    if values is None or values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise InputError(
            f"{path} cate_list is {_short_repr(cate_list)}: expected a 1-D integer array (cate id per item id)"
        )
    if len(values) != n_items:
        raise InputError(
            f"{path} cate_list has {len(values)} entries but asin_key has {n_items}: expected one cate id per item id"
        )
    _check_id_range(values, path, "cate_list", "cate_key", n_cates, "entry")
    return values.astype(np.int64)


def _remap_ids(column: pd.Series, path: Path, name: str, key_name: str, n_keys: int) -> np.ndarray:
    ids = _integer_values(column, f"{path} reviews_df", name, f"0-based integer ids into {key_name}")
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
        raise InputError(f"{path} object 3 is {_short_repr(counts)}: expected {expected}")
    for name, claimed, real in zip(names, counts, actual):
        if isinstance(claimed, bool) or not isinstance(claimed, (int, np.integer)) or claimed != real:
            raise InputError(f"{path} {name} is {_shown(claimed)} but the data has {real}: expected {expected}")


def _short_repr(value: Any, limit: int = 60) -> str:
    return f"{_shown(value, limit)} ({type(value).__name__})"


class _BoundedRepr(reprlib.Repr):
    """repr that stops after a few levels and items: values come from untrusted pickles, where a
    small file can hold a list that references itself a million times over."""

    def __init__(self, limit: int):
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother = 3, limit, limit
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = 6

    def repr_instance(self, value: Any, level: int) -> str:
        # numpy/pandas containers would repr every element: show their type and size only.
        if isinstance(value, (np.ndarray, pd.Series, pd.Index, pd.DataFrame)):
            return f"<{type(value).__name__} of shape {value.shape}>"
        return super().repr_instance(value, level)


def _shown(value: Any, limit: int = 60) -> str:
    text = _BoundedRepr(limit).repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- output


def _write_pickle_pair(raw_dir: Path, reviews: pd.DataFrame, meta: pd.DataFrame) -> None:
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


# ---------------------------------------------------------------- sandbox jobs


def _sample_reviews() -> list[list]:
    frame = pd.DataFrame({"reviewerID": ["A1", "A2"], "asin": ["B1", "B2"], "unixReviewTime": np.array([1, 2])})
    return [[frame], [frame.astype({"reviewerID": object, "asin": object})]]


def _sample_meta() -> list[list]:
    frame = pd.DataFrame({"asin": ["B1", "B2"], "categories": pd.Series([[["E", "Cam"]], [["TV"]]], dtype=object)})
    return [[frame], [frame.astype({"asin": object})]]


def _sample_remap() -> list[list]:
    ids = pd.DataFrame({"reviewerID": [0, 1], "asin": [1, 0], "unixReviewTime": [1, 2]})
    return [[ids, np.array([0, 0]), (2, 2, 1, 2), (["B1", "B2"], ["Cam"], ["A1", "A2"])]]


_REVIEW_KINDS = {"reviewerID": "str", "asin": "str", "unixReviewTime": "int64"}
SANDBOX_JOBS = {
    "reviews": untrusted.SandboxJob(
        "reviews", __name__, check_reviews, _sample_reviews, 1, EXPECTED_REVIEWS, {"reviews": _REVIEW_KINDS}, ("rows",)
    ),
    "meta": untrusted.SandboxJob(
        "meta", __name__, check_meta, _sample_meta, 1, EXPECTED_META, {"meta": {"asin": "str", "category": "str"}},
        ("rows", "duplicate_meta_asins_dropped"),
    ),
    "remap": untrusted.SandboxJob(
        "remap", __name__, check_remap, _sample_remap, 4, EXPECTED_REMAP,
        {"reviews": _REVIEW_KINDS, "meta": {"asin": "str", "category": "str"}},
        ("users", "items", "categories", "reviews_rows"),
    ),
}

__all__ = ["load_reviews", "load_meta", "load_raw_pickles", "convert_amazon_json", "convert_remap_pickle",
           "SANDBOX_JOBS"]
