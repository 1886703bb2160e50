"""`[raw] source = amazon-json`: the Amazon product-data files turned into reviews.pkl and meta.pkl.

`convert_amazon_json` reads the one `reviews_*.json[.gz]` and `meta_*.json[.gz]` of the raw
directory, streaming line by line; every bad line is one InputError naming the file and the
line. The pair is written atomically: on error no new pickle appears.
"""
from __future__ import annotations

import ast
import gzip
import json
import os
import re
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from din_common.errors import InputError
from pipeline.compat import text_array
from pipeline.raw.frames import (
    EXPECTED_CATEGORIES, INT64_MAX, category_of, category_problem, existing_dir, write_pickle_pair,
)


def convert_amazon_json(raw_dir: str | os.PathLike) -> dict:
    """Convert the one reviews_*.json[.gz] and meta_*.json[.gz] in raw_dir to reviews.pkl and meta.pkl.

    Reviews lines are JSON; meta lines are JSON or Python literals (the 2014
    Amazon files), read with ast.literal_eval, never eval. Returns counts.
    """
    raw_dir = existing_dir(raw_dir)
    reviews_source = _find_one_source(raw_dir, "reviews_")
    meta_source = _find_one_source(raw_dir, "meta_")
    reviews = _parse_reviews(reviews_source)
    meta, literal_lines = _parse_meta(meta_source)
    write_pickle_pair(raw_dir, reviews, meta)
    return {
        "reviews_source": reviews_source.name,
        "meta_source": meta_source.name,
        "reviews_rows": len(reviews),
        "meta_rows": len(meta),
        "meta_python_literal_lines": literal_lines,
    }


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
            -INT64_MAX <= seconds <= INT64_MAX
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
        ok = isinstance(value, int) and not isinstance(value, bool) and -INT64_MAX <= value <= INT64_MAX
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
        if category_of(category_lists) is None:
            raise InputError(f"{where} (asin {asins[-1]!r}): categories {category_problem(category_lists)}: "
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
