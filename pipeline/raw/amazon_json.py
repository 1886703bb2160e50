"""`[raw] source = amazon-json`: the Amazon product-data files turned into reviews.pkl and meta.pkl.

`convert_amazon_json` reads the one `reviews_*.json[.gz]` and `meta_*.json[.gz]` of the raw
directory, streaming line by line; every bad line is one InputError naming the file and the
line. The pair is written atomically: on error no new pickle appears.

The files come from elsewhere, so reading them is bounded (`JsonLimits`): a line longer than
`max_line_bytes` is refused before it is read whole, and a gzip file that unpacks to more
than `max_gzip_ratio` times its size is refused as it streams (a few MB of blank lines
unpack to GiBs). Blank lines are skipped without a Python step each.
pandas is imported where the frames are built: pipeline.settings imports `JsonLimits` from here
into the `luigi` command's process, which has no use for pandas (pipeline.compat).
"""
from __future__ import annotations

import ast
import gzip
import json
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from din_common.errors import InputError
from pipeline.compat import text_array
from pipeline.raw.frames import (
    EXPECTED_CATEGORIES, EXPECTED_ID, INT64_MAX, INT64_MIN, category_of, category_problem, existing_dir, first_blank,
    shown, write_pickle_pair,
)

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class JsonLimits:
    """How much of a JSON source is read ([raw] json_max_line_bytes, json_max_gzip_ratio)."""
    # One review or item per line: even long item descriptions are far below this.
    max_line_bytes: int = 16 * 2**20
    # Text JSON compresses a few times over; a ratio this high is a decompression bomb.
    max_gzip_ratio: int = 100


_CHUNK_BYTES = 1 << 20


def convert_amazon_json(raw_dir: str | os.PathLike, limits: JsonLimits = JsonLimits()) -> dict:
    """Convert the one reviews_*.json[.gz] and meta_*.json[.gz] in raw_dir to reviews.pkl and meta.pkl.

    Reviews lines are JSON; meta lines are JSON or Python literals (the 2014
    Amazon files), read with ast.literal_eval, never eval. Returns counts.
    """
    raw_dir = existing_dir(raw_dir)
    reviews_source = _find_one_source(raw_dir, "reviews_")
    meta_source = _find_one_source(raw_dir, "meta_")
    reviews = _parse_reviews(reviews_source, limits)
    meta, literal_lines = _parse_meta(meta_source, limits)
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


def _numbered_lines(path: Path, limits: JsonLimits) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line) of the lines holding more than whitespace, streaming.

    Unreadable input, an overlong line or a gzip bomb becomes InputError.
    """
    compressed = path.name.endswith(".gz")
    opener = gzip.open if compressed else open
    line_number = 0  # lines ended before the text at hand
    try:
        budget = limits.max_gzip_ratio * max(path.stat().st_size, 1) if compressed else None
        with opener(path, "rb") as handle:
            unpacked, tail = 0, []  # bytes read so far; the pieces of a line not ended yet
            while True:
                chunk = handle.read(_CHUNK_BYTES)
                if not chunk:
                    break
                unpacked += len(chunk)
                if budget is not None and unpacked > budget:
                    _refuse_bomb(path, line_number + 1 + chunk.count(b"\n"), budget, limits)
                end = chunk.rfind(b"\n") + 1
                if end == 0:  # no line ends in this chunk
                    tail.append(chunk)
                    if sum(map(len, tail)) > limits.max_line_bytes:
                        _refuse_long_line(path, line_number + 1, limits)
                    continue
                text, tail = b"".join(tail) + chunk[:end], [chunk[end:]]
                yield from _decoded(_non_blank_lines(text, line_number, path, limits), path)
                line_number += text.count(b"\n")
            yield from _decoded(_non_blank_lines(b"".join(tail), line_number, path, limits), path)
    except (OSError, EOFError, zlib.error) as error:
        if not compressed:
            raise InputError(f"cannot read {path} ({error}): expected a readable text file") from None
        raise InputError(
            f"{path} is a corrupt gzip file, failing at line {line_number + 1} ({error}): "
            "expected a complete gzip-compressed file of JSON lines"
        ) from None


# A line's text from its first non-blank byte: searching for it skips blank lines at the regex engine's
# speed (and \S never matches \n, so the search is linear).
_LINE_TEXT = re.compile(rb"\S[^\n]*")
# Text whose lines average fewer bytes than this is mostly blank lines: searched, not split line by line.
_SPLIT_MIN_LINE_BYTES = 64


def _non_blank_lines(text: bytes, line_number: int, path: Path, limits: JsonLimits) -> list[tuple[int, bytes]]:
    """(line number, line) of the lines of `text` holding more than whitespace; its first is line_number + 1."""
    lines = [] if text.count(b"\n") * _SPLIT_MIN_LINE_BYTES > len(text) else text.split(b"\n")
    if lines:
        found = [(number, line) for number, line in enumerate(lines, start=line_number + 1) if line.strip()]
    else:
        found, position = [], 0
        for match in _LINE_TEXT.finditer(text):
            line_number += text.count(b"\n", position, match.start())
            position = match.start()
            found.append((line_number + 1, match.group()))
    if found and max(len(line) for _, line in found) > limits.max_line_bytes:
        _refuse_long_line(path, next(number for number, line in found if len(line) > limits.max_line_bytes), limits)
    return found


def _decoded(lines: list[tuple[int, bytes]], path: Path) -> Iterator[tuple[int, str]]:
    # Decoded line by line, so a bad byte is blamed on its own line.
    for line_number, raw_line in lines:
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InputError(
                f"{path} line {line_number} is not UTF-8 text ({error.reason} at byte {error.start}): "
                "expected UTF-8 JSON lines"
            ) from None
        yield line_number, line


def _refuse_bomb(path: Path, line_number: int, budget: int, limits: JsonLimits) -> None:
    raise InputError(
        f"{path} unpacks to more than {budget:,} bytes, {limits.max_gzip_ratio} times its compressed size "
        f"(at line {line_number}; [raw] json_max_gzip_ratio): expected gzip-compressed JSON lines, which compress "
        "far less; raise the setting if the file is genuine"
    )


def _refuse_long_line(path: Path, line_number: int, limits: JsonLimits) -> None:
    raise InputError(
        f"{path} line {line_number} is longer than {limits.max_line_bytes:,} bytes ([raw] json_max_line_bytes): "
        "expected one review or item per line; raise the setting if the line is genuine"
    )


_decode_json = json.JSONDecoder().decode
_EXPECTED_REVIEW_LINE = "one JSON object per line with reviewerID (str), asin (str) and unixReviewTime (int)"


def _parse_reviews(path: Path, limits: JsonLimits) -> pd.DataFrame:
    import pandas as pd

    reviewer_ids, asins, times, overall = [], [], [], []
    # The loop is the cost of converting millions of lines: only cheap checks
    # here; _raise_review_problem works out the message when one fails.
    for line_number, line in _numbered_lines(path, limits):
        try:
            record = _decode_json(line)
            reviewer_id, asin, seconds = record["reviewerID"], record["asin"], record["unixReviewTime"]
        except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
            raise InputError(f"{path} line {line_number} {_json_problem(error)}: expected {_EXPECTED_REVIEW_LINE}"
                             ) from None
        except (KeyError, TypeError, IndexError):  # not an object, or a key missing
            _raise_review_problem(record, f"{path} line {line_number}")
        # type() rather than isinstance: a bool is not a timestamp.
        if type(reviewer_id) is not str or type(asin) is not str or type(seconds) is not int or not (
            INT64_MIN <= seconds <= INT64_MAX
        ):
            _raise_review_problem(record, f"{path} line {line_number}")
        if "\\u" in line:  # only an escape can make a lone surrogate (the bytes were checked UTF-8)
            _check_unicode(f"{path} line {line_number}", reviewerID=reviewer_id, asin=asin)
        reviewer_ids.append(reviewer_id)
        asins.append(asin)
        times.append(seconds)
        score = record.get("overall")
        overall.append(score if type(score) in (float, int) else np.nan)
    if not reviewer_ids:
        raise InputError(f"{path} has no reviews: expected {_EXPECTED_REVIEW_LINE}")
    for name, values in (("reviewerID", reviewer_ids), ("asin", asins)):
        _check_ids_not_blank(values, name, path, limits)
    columns = {
        "reviewerID": text_array(reviewer_ids),
        "asin": text_array(asins),
        "unixReviewTime": np.array(times, dtype=np.int64),
    }
    scores = np.array(overall, dtype=np.float64)
    if not np.isnan(scores).all():
        columns["overall"] = scores
    return pd.DataFrame(columns)


def _json_problem(error: Exception) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"is not valid JSON ({error.msg} at column {error.colno})"
    if isinstance(error, RecursionError):
        return "nests lists or objects deeper than the JSON reader can follow"
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    return f"holds a value the JSON reader refuses ({detail})"


def _check_unicode(where: str, **texts: Any) -> None:
    """A str holding a lone surrogate (from an escape such as \\ud800) cannot be stored: refuse its line."""
    for name, text in texts.items():
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                raise InputError(f"{where} has {name} = {shown(text)} with a lone surrogate at character "
                                 f"{error.start}: expected valid Unicode text (surrogates only in pairs)") from None


def _check_ids_not_blank(values: list, name: str, path: Path, limits: JsonLimits) -> None:
    row = first_blank(values)
    if row is not None:
        raise InputError(f"{path} line {_line_of_row(path, row, limits)} has {name} = {shown(values[row])}: "
                         f"{EXPECTED_ID}")


def _line_of_row(path: Path, row: int, limits: JsonLimits) -> int:
    """The line number of the row-th (0-based) non-blank line, for an error found after the loop."""
    for index, (line_number, _) in enumerate(_numbered_lines(path, limits)):
        if index == row:
            return line_number
    raise AssertionError(f"{path} has no row {row}")  # unreachable: the row came from reading this file


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
        ok = isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise InputError(f"{where} has {key} = {value!r} ({type(value).__name__}): expected {expected}")
    return value


def _parse_meta(path: Path, limits: JsonLimits) -> tuple[pd.DataFrame, int]:
    import pandas as pd

    expected = (
        "one JSON object or Python dict literal per line with asin (str) and "
        "categories (a non-empty list of non-empty lists of str)"
    )
    asins, categories, titles = [], [], []
    has_title = False
    literal_lines = 0
    for line_number, line in _numbered_lines(path, limits):
        where = f"{path} line {line_number}"
        record, was_literal = _parse_meta_line(line, where, expected)
        literal_lines += was_literal
        if not isinstance(record, dict):
            raise InputError(f"{where} holds a {type(record).__name__}: expected {expected}")
        asins.append(_field(record, "asin", str, where, expected))
        category_lists = record.get("categories")
        category = category_of(category_lists)
        if category is None:
            raise InputError(f"{where} (asin {asins[-1]!r}): categories {category_problem(category_lists)}: "
                             f"expected {EXPECTED_CATEGORIES}")
        categories.append(category_lists)
        title = record.get("title")
        _check_unicode(where, asin=asins[-1], category=category, title=title)
        has_title = has_title or isinstance(title, str)
        titles.append(title if isinstance(title, str) else None)
    if not asins:
        raise InputError(f"{path} has no items: expected {expected}")
    _check_ids_not_blank(asins, "asin", path, limits)
    columns = {"asin": text_array(asins), "categories": pd.Series(categories, dtype=object)}
    if has_title:
        columns["title"] = text_array(titles)
    return pd.DataFrame(columns), literal_lines


def _parse_meta_line(line: str, where: str, expected: str) -> tuple[Any, bool]:
    try:
        return json.loads(line), False
    except json.JSONDecodeError:
        pass
    except (ValueError, RecursionError) as error:  # JSON, but nested too deep or an integer too long
        raise InputError(f"{where} {_json_problem(error)}: expected {expected}") from None
    try:
        # The 2014 meta files are Python literals ({'asin': '...'}); literal_eval
        # builds only literals and can't call anything.
        return ast.literal_eval(line.strip()), True
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"{where} is neither JSON nor a Python literal ({detail}): expected {expected}") from None
