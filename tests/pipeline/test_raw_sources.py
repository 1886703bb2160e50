"""Tests for pipeline.raw: loading, checking and converting the raw input."""
from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from din_common.errors import InputError
from pipeline.compat import TEXT_DTYPE
from pipeline.raw.amazon_json import convert_amazon_json
from pipeline.raw.pickles import load_meta, load_reviews
from pipeline.raw.remap_pickle import convert_remap_pickle

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pickles"
# Every protocol this interpreter writes (5 only from Python 3.8 on).
PROTOCOLS = tuple(range(2, pickle.HIGHEST_PROTOCOL + 1))
# pandas.ArrowDtype columns exist from pandas 1.5 on; the Ascend stack's pandas 1.3/1.4 can't hold them.
needs_arrow_dtype = pytest.mark.skipif(not hasattr(pd, "ArrowDtype"), reason="pandas < 1.5 has no ArrowDtype")


def arrow_dtype_column(name: str, values: list, arrow_type: pa.DataType) -> dict:
    """{name: pandas array of ArrowDtype(arrow_type)}, or {} where pandas has no ArrowDtype."""
    if not hasattr(pd, "ArrowDtype"):
        return {}
    return {name: pd.array(values, dtype=pd.ArrowDtype(arrow_type))}


def old_pickles(kind: str, *extra: str) -> list:
    """The fixtures `<kind>_pd<version>_p<protocol>.pkl` (plus `extra`) as test parameters.

    A pickle of a newer pandas that this pandas itself cannot read (pandas 1.3 has no
    `_unpickle_block`, which DataFrame pickles name from pandas 1.4 on) is skipped:
    no loader can do better than the pandas it rebuilds the frame with.
    """
    names = [f"{kind}_pd{version}_p{protocol}.pkl" for version in ("1.3", "1.4", "1.5", "2.2") for protocol in (2, 4)]
    params = []
    for name in names + list(extra):
        try:
            pd.read_pickle(FIXTURES / name)  # our own fixture: trusted
        except (AttributeError, ImportError, TypeError) as error:
            reason = f"pandas {pd.__version__} itself cannot read {name} ({type(error).__name__}: {error})"
            params.append(pytest.param(name, marks=pytest.mark.skip(reason=reason)))
        else:
            params.append(name)
    return params


def write_frame(path: Path, frame: pd.DataFrame, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    frame.to_pickle(path, protocol=protocol)
    return path


def reviews_frame(**overrides) -> pd.DataFrame:
    columns = {
        "reviewerID": ["A1", "A2", "A1"],
        "asin": ["B1", "B2", "B2"],
        "unixReviewTime": np.array([1400000000, 1400000100, 1400000200], dtype=np.int64),
        "overall": [5.0, 3.0, 4.0],
        "reviewText": ["good", "meh", "fine"],
    }
    columns.update(overrides)
    return pd.DataFrame(columns)


def meta_frame(asins=("B1", "B2"), categories=None) -> pd.DataFrame:
    if categories is None:
        categories = [[["Books", "Fiction"]], [["Toys"], ["Electronics", "Cables"]]]
    return pd.DataFrame({"asin": list(asins), "categories": pd.Series(categories, dtype=object)})


def assert_frame_is(frame: pd.DataFrame, expected: dict) -> None:
    assert list(frame.columns) == list(expected)
    for column, values in expected.items():
        assert frame[column].tolist() == values
    assert isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0


def expected_reviews_dtypes(frame: pd.DataFrame) -> None:
    assert frame["reviewerID"].dtype == TEXT_DTYPE
    assert frame["asin"].dtype == TEXT_DTYPE
    assert frame["unixReviewTime"].dtype == np.int64


# ---------------------------------------------------------------- load_reviews


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_load_reviews_keeps_the_three_columns(tmp_path, protocol):
    path = write_frame(tmp_path / "reviews.pkl", reviews_frame(), protocol)

    frame, info = load_reviews(path)

    assert_frame_is(
        frame,
        {
            "reviewerID": ["A1", "A2", "A1"],
            "asin": ["B1", "B2", "B2"],
            "unixReviewTime": [1400000000, 1400000100, 1400000200],
        },
    )
    expected_reviews_dtypes(frame)
    assert info == {"rows": 3}


@pytest.mark.parametrize(
    "variant",
    [
        {
            "reviewerID": pd.Series(["A1", "A2", "A1"], dtype=object),
            "asin": pd.Series(["B1", "B2", "B2"], dtype=object),
        },
        {"reviewerID": pd.array(["A1", "A2", "A1"], dtype="string[python]")},
        pytest.param(arrow_dtype_column("asin", ["B1", "B2", "B2"], pa.string()), marks=needs_arrow_dtype),
        {"asin": pd.Categorical(["B1", "B2", "B2"])},
        {"unixReviewTime": np.array([1400000000, 1400000100, 1400000200], dtype=np.int32)},
        {"unixReviewTime": pd.array([1400000000, 1400000100, 1400000200], dtype="Int64")},
        {"unixReviewTime": pd.Series([1400000000, 1400000100, 1400000200], dtype=object)},
    ],
    ids=["object", "python-string", "arrow-string", "categorical", "int32", "Int64", "object-int"],
)
def test_load_reviews_accepts_other_string_and_integer_dtypes(tmp_path, variant):
    path = write_frame(tmp_path / "reviews.pkl", reviews_frame(**variant))

    frame, _ = load_reviews(path)

    assert frame["asin"].tolist() == ["B1", "B2", "B2"]
    assert frame["unixReviewTime"].tolist() == [1400000000, 1400000100, 1400000200]
    expected_reviews_dtypes(frame)


@pytest.mark.parametrize("name", old_pickles("reviews", "reviews_pd2.2_pyarrow_p4.pkl"))
def test_load_reviews_reads_old_pandas_pickles(name):
    frame, info = load_reviews(FIXTURES / name)

    assert_frame_is(
        frame,
        {
            "reviewerID": ["A1", "A2", "A1", "A3"],
            "asin": ["B1", "B2", "B2", "B1"],
            "unixReviewTime": [1400000000, 1400000100, 1400000200, 1400000300],
        },
    )
    expected_reviews_dtypes(frame)
    assert info == {"rows": 4}


def test_load_reviews_resets_a_non_default_index(tmp_path):
    path = write_frame(tmp_path / "reviews.pkl", reviews_frame().set_index(pd.Index([7, 7, 3])))

    frame, _ = load_reviews(path)

    assert frame.index.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "content, message",
    [
        (
            [1, 2],
            r"reviews\.pkl holds a builtins\.list: expected a pandas DataFrame with columns "
            r"reviewerID, asin, unixReviewTime",
        ),
        (pd.Series([1]), r"reviews\.pkl holds a pandas(\.core\.series)?\.Series: expected a pandas DataFrame"),
        (
            reviews_frame().drop(columns=["unixReviewTime"]),
            r"reviews\.pkl has no column 'unixReviewTime' \(columns found: reviewerID, asin, overall, reviewText\): "
            r"expected columns reviewerID, asin, unixReviewTime",
        ),
        (reviews_frame().iloc[:0], r"reviews\.pkl has no rows: expected at least one row of reviews"),
        (
            pd.concat([reviews_frame(), reviews_frame()[["asin"]]], axis=1),
            r"reviews\.pkl has 2 columns named 'asin': expected exactly one",
        ),
    ],
    ids=["list", "series", "missing-column", "empty", "duplicate-column"],
)
def test_load_reviews_rejects_wrong_shapes(tmp_path, content, message):
    path = tmp_path / "reviews.pkl"
    with open(path, "wb") as handle:
        pickle.dump(content, handle)

    with pytest.raises(InputError, match=message):
        load_reviews(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"reviewerID": [11, 12, 11]}, r"column reviewerID has dtype int64: expected strings \(str\)"),
        ({"asin": [1.0, 2.0, 2.0]}, r"column asin has dtype float64: expected strings \(str\)"),
        (
            {"asin": pd.Series(["B1", 5, "B2"], dtype=object)},
            r"column asin row 1 holds 5 \(int\): expected strings \(str\)",
        ),
        pytest.param(
            {"unixReviewTime": ["2014-05-01", "2014-05-02", "2014-05-03"]},
            r"column unixReviewTime has dtype str: expected integer seconds since 1970 \(int64\) "
            r"\(found text such as '2014-05-01'\)",
            marks=pytest.mark.skipif(pd.Series(["a"]).dtype == object, reason="pandas < 3 makes an object column "
                                                                             "of strings: the object-text-time case"),
        ),
        (
            {"unixReviewTime": pd.Series(["2014-05-01", 1, 2], dtype=object)},
            r"column unixReviewTime row 0 holds '2014-05-01' \(str\): expected integer seconds",
        ),
        (
            {"unixReviewTime": [1400000000.0, 1400000100.0, 1400000200.5]},
            r"column unixReviewTime has dtype float64: expected integer seconds since 1970 \(int64\) .*astype",
        ),
        (
            {"unixReviewTime": pd.to_datetime([1, 2, 3], unit="s")},
            r"column unixReviewTime has dtype datetime64\[\w+\]: expected integer seconds",
        ),
        ({"unixReviewTime": [True, False, True]}, r"column unixReviewTime has dtype bool: expected integer seconds"),
    ],
    ids=["int-ids", "float-asin", "mixed-object", "text-time", "object-text-time", "float-time", "datetime", "bool"],
)
def test_load_reviews_rejects_wrong_dtypes(tmp_path, override, message):
    path = write_frame(tmp_path / "reviews.pkl", reviews_frame(**override))

    with pytest.raises(InputError, match=r"reviews\.pkl " + message):
        load_reviews(path)


@pytest.mark.parametrize(
    "override, message",
    [
        (
            {"reviewerID": pd.Series(["A1", None, None], dtype=object)},
            r"column reviewerID has 2 missing values \(NaN/None\), first at row 1",
        ),
        ({"asin": ["B1", "B2", None]}, r"column asin has 1 missing values \(NaN/None\), first at row 2"),
        (
            {"unixReviewTime": [1400000000, np.nan, 1400000200]},
            r"column unixReviewTime has 1 missing values \(NaN/None\), first at row 1",
        ),
        (
            {"unixReviewTime": pd.array([None, 1, 2], dtype="Int64")},
            r"column unixReviewTime has 1 missing values \(NaN/None\), first at row 0",
        ),
    ],
    ids=["object-none", "str-nan", "float-nan", "Int64-NA"],
)
def test_load_reviews_rejects_missing_values(tmp_path, override, message):
    path = write_frame(tmp_path / "reviews.pkl", reviews_frame(**override))

    with pytest.raises(InputError, match=r"reviews\.pkl " + message + ": expected a value in every row"):
        load_reviews(path)


def test_load_reviews_refuses_a_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "reviews.pkl"
    with open(path, "wb") as handle:
        pickle.dump(Payload(), handle)

    with pytest.raises(InputError, match=r"refusing to load .*reviews\.pkl: it asks for .*os\.system"):
        load_reviews(path)
    assert not marker.exists()


def test_load_reviews_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"reviews\.pkl does not exist: expected a pandas DataFrame of reviews"):
        load_reviews(tmp_path / "reviews.pkl")


# ---------------------------------------------------------------- load_meta


def test_load_meta_takes_the_last_category_of_the_last_list(tmp_path):
    path = write_frame(tmp_path / "meta.pkl", meta_frame())

    frame, info = load_meta(path)

    assert_frame_is(frame, {"asin": ["B1", "B2"], "category": ["Fiction", "Cables"]})
    assert frame["asin"].dtype == TEXT_DTYPE and frame["category"].dtype == TEXT_DTYPE
    assert info == {"rows": 2, "duplicate_meta_asins_dropped": 0}


@pytest.mark.parametrize("name", old_pickles("meta"))
def test_load_meta_reads_old_pandas_pickles(name):
    frame, info = load_meta(FIXTURES / name)

    assert_frame_is(frame, {"asin": ["B1", "B2", "B3"], "category": ["Fiction", "Puzzles", "Cables"]})
    assert info == {"rows": 3, "duplicate_meta_asins_dropped": 0}


def test_load_meta_accepts_numpy_arrays_from_a_parquet_round_trip(tmp_path):
    meta_frame().to_parquet(tmp_path / "meta.parquet")
    round_tripped = pd.read_parquet(tmp_path / "meta.parquet")
    assert isinstance(round_tripped["categories"][0], np.ndarray)
    path = write_frame(tmp_path / "meta.pkl", round_tripped)

    frame, _ = load_meta(path)

    assert frame["category"].tolist() == ["Fiction", "Cables"]


@needs_arrow_dtype
def test_load_meta_accepts_a_pyarrow_list_column(tmp_path):
    categories = arrow_dtype_column(
        "categories", [[["Books", "Fiction"]], [["Toys"], ["Electronics", "Cables"]]], pa.list_(pa.list_(pa.string()))
    )
    path = write_frame(tmp_path / "meta.pkl", pd.DataFrame({"asin": ["B1", "B2"], **categories}))

    frame, _ = load_meta(path)

    assert frame["category"].tolist() == ["Fiction", "Cables"]


def test_load_meta_keeps_the_first_of_duplicate_asins(tmp_path):
    frame = meta_frame(
        asins=("B1", "B2", "B1", "B1"),
        # The dropped duplicates' categories are never read, even a broken one.
        categories=[[["Books"]], [["Toys"]], [["Garden"]], None],
    )
    path = write_frame(tmp_path / "meta.pkl", frame)

    meta, info = load_meta(path)

    assert_frame_is(meta, {"asin": ["B1", "B2"], "category": ["Books", "Toys"]})
    assert info == {"rows": 2, "duplicate_meta_asins_dropped": 2}


@pytest.mark.parametrize(
    "bad, problem",
    [
        (None, r"is missing"),
        (np.nan, r"is missing"),
        ([], r"is an empty list"),
        ("Books", r"is a plain string 'Books', not a list of lists"),
        (["Books", "Fiction"], r"has last element 'Fiction' \(str\), not a list"),
        ([["Books"], []], r"has an empty innermost list \(categories\[-1\] is empty\)"),
        ([["Books", 5]], r"has categories\[-1\]\[-1\] = 5 \(int\), not a str"),
        (7, r"is 7 \(int\), not a list"),
        ({"Books": 1}, r"is \{'Books': 1\} \(dict\), not a list"),
    ],
    ids=["none", "nan", "empty", "string", "flat-list", "empty-inner", "not-str", "int", "dict"],
)
def test_load_meta_rejects_bad_categories(tmp_path, bad, problem):
    frame = meta_frame(asins=("B1", "B2", "B3"), categories=[[["Books"]], [["Toys"]], bad])
    path = write_frame(tmp_path / "meta.pkl", frame)

    with pytest.raises(
        InputError,
        match=r"meta\.pkl column categories row 2 \(asin 'B3'\) " + problem
        + r": expected a non-empty list of non-empty lists of str \(the category is categories\[-1\]\[-1\]\)",
    ):
        load_meta(path)


@pytest.mark.parametrize(
    "frame, message",
    [
        (
            pd.DataFrame({"asin": ["B1"], "category": ["Books"]}),
            r"has no column 'categories' \(columns found: asin, category\)",
        ),
        (meta_frame().iloc[:0], r"has no rows: expected at least one row of items"),
        (meta_frame(asins=(1, 2)), r"column asin has dtype int64: expected strings \(str\)"),
        (meta_frame(asins=("B1", None)), r"column asin has 1 missing values \(NaN/None\), first at row 1"),
    ],
    ids=["no-categories", "empty", "int-asin", "missing-asin"],
)
def test_load_meta_rejects_wrong_frames(tmp_path, frame, message):
    path = write_frame(tmp_path / "meta.pkl", frame)

    with pytest.raises(InputError, match=r"meta\.pkl " + message):
        load_meta(path)


# ---------------------------------------------------------------- convert_amazon_json

REVIEW_LINES = [
    {"reviewerID": "A1", "asin": "B1", "reviewerName": "Ann", "overall": 5.0, "unixReviewTime": 1400000000},
    {"reviewerID": "A2", "asin": "B2", "unixReviewTime": 1400000100},
    {"reviewerID": "A1", "asin": "B2", "overall": 4, "unixReviewTime": 1400000200},
]
META_LINES = [
    json.dumps({"asin": "B1", "title": "A \"novel\"", "categories": [["Books", "Fiction"]]}),
    # The 2014 files are Python literals: single quotes, and an apostrophe inside.
    "{'asin': 'B2', 'title': \"Kids' puzzle\", 'categories': [['Toys & Games'], ['Toys & Games', 'Puzzles']], "
    "'salesRank': {'Toys': 5}}",
]


def write_lines(path: Path, lines: list[str]) -> Path:
    text = "".join(line + "\n" for line in lines)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_amazon(raw_dir: Path, suffix: str = ".json", reviews=None, meta=None) -> None:
    reviews = [json.dumps(record) for record in REVIEW_LINES] if reviews is None else reviews
    write_lines(raw_dir / f"reviews_Toys_5{suffix}", reviews)
    write_lines(raw_dir / f"meta_Toys{suffix}", META_LINES if meta is None else meta)


def assert_no_pickles(raw_dir: Path) -> None:
    leftovers = sorted(p.name for p in raw_dir.iterdir() if ".pkl" in p.name)
    assert leftovers == [], leftovers


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_convert_amazon_json_writes_both_pickles(tmp_path, suffix):
    write_amazon(tmp_path, suffix)

    info = convert_amazon_json(tmp_path)

    assert info == {
        "reviews_source": f"reviews_Toys_5{suffix}",
        "meta_source": f"meta_Toys{suffix}",
        "reviews_rows": 3,
        "meta_rows": 2,
        "meta_python_literal_lines": 1,
    }
    raw_reviews = pd.read_pickle(tmp_path / "reviews.pkl")
    assert list(raw_reviews.columns) == ["reviewerID", "asin", "unixReviewTime", "overall"]
    assert raw_reviews["overall"].tolist()[::2] == [5.0, 4.0] and np.isnan(raw_reviews["overall"][1])
    raw_meta = pd.read_pickle(tmp_path / "meta.pkl")
    assert raw_meta["title"].tolist() == ['A "novel"', "Kids' puzzle"]
    assert raw_meta["categories"].tolist()[1] == [["Toys & Games"], ["Toys & Games", "Puzzles"]]
    # protocol 4, which Python 3.7 reads (3.8+ would default to 5)
    assert [(tmp_path / name).read_bytes()[:2] for name in ("reviews.pkl", "meta.pkl")] == [b"\x80\x04"] * 2

    reviews, _ = load_reviews(tmp_path / "reviews.pkl")
    meta, _ = load_meta(tmp_path / "meta.pkl")
    assert_frame_is(
        reviews,
        {"reviewerID": ["A1", "A2", "A1"], "asin": ["B1", "B2", "B2"],
         "unixReviewTime": [1400000000, 1400000100, 1400000200]},
    )
    assert_frame_is(meta, {"asin": ["B1", "B2"], "category": ["Fiction", "Puzzles"]})


def test_convert_amazon_json_skips_blank_lines(tmp_path):
    write_amazon(tmp_path, reviews=[json.dumps(REVIEW_LINES[0]), "", "   ", json.dumps(REVIEW_LINES[1])])

    assert convert_amazon_json(tmp_path)["reviews_rows"] == 2


def test_convert_amazon_json_needs_a_reviews_file(tmp_path):
    write_lines(tmp_path / "meta_Toys.json", META_LINES)

    with pytest.raises(
        InputError,
        match=r"has no reviews_\*\.json or reviews_\*\.json\.gz file \(found: meta_Toys\.json\): expected exactly one",
    ):
        convert_amazon_json(tmp_path)
    assert_no_pickles(tmp_path)


def test_convert_amazon_json_wants_exactly_one_meta_file(tmp_path):
    write_amazon(tmp_path)
    write_lines(tmp_path / "meta_Books.json.gz", META_LINES)

    with pytest.raises(
        InputError,
        match=r"has 2 meta_\*\.json or meta_\*\.json\.gz files \(meta_Books\.json\.gz, meta_Toys\.json\): "
        r"expected exactly one",
    ):
        convert_amazon_json(tmp_path)
    assert_no_pickles(tmp_path)


def test_convert_amazon_json_missing_directory(tmp_path):
    with pytest.raises(InputError, match=r"raw data directory .*nowhere does not exist"):
        convert_amazon_json(tmp_path / "nowhere")


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_convert_amazon_json_names_the_malformed_review_line(tmp_path, suffix):
    lines = [json.dumps(REVIEW_LINES[0]), json.dumps(REVIEW_LINES[1]), '{"reviewerID": "A3", "asin": ']
    write_amazon(tmp_path, suffix, reviews=lines)

    with pytest.raises(
        InputError,
        match=rf"reviews_Toys_5{suffix.replace('.', '[.]')} line 3 is not valid JSON \(.* at column \d+\): "
        r"expected one JSON object per line with reviewerID \(str\), asin \(str\) and unixReviewTime \(int\)",
    ):
        convert_amazon_json(tmp_path)
    assert_no_pickles(tmp_path)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"reviewerID": "A3", "asin": "B1"}', r"line 2 has no key 'unixReviewTime'"),
        (
            '{"reviewerID": "A3", "asin": "B1", "unixReviewTime": "2014-05-01"}',
            r"line 2 has unixReviewTime = '2014-05-01' \(str\)",
        ),
        ('{"reviewerID": 3, "asin": "B1", "unixReviewTime": 1}', r"line 2 has reviewerID = 3 \(int\)"),
        ('{"reviewerID": "A3", "asin": "B1", "unixReviewTime": 1.5}', r"line 2 has unixReviewTime = 1\.5 \(float\)"),
        ('["A3", "B1", 1]', r"line 2 holds a list"),
    ],
    ids=["missing-key", "text-time", "int-id", "float-time", "not-object"],
)
def test_convert_amazon_json_checks_review_fields(tmp_path, line, message):
    write_amazon(tmp_path, reviews=[json.dumps(REVIEW_LINES[0]), line])

    with pytest.raises(InputError, match=r"reviews_Toys_5\.json " + message + r": expected one JSON object"):
        convert_amazon_json(tmp_path)
    assert_no_pickles(tmp_path)


def test_convert_amazon_json_names_the_malformed_meta_line(tmp_path):
    write_amazon(tmp_path, meta=[META_LINES[0], "{'asin': 'B2', 'categories': [['Toys']]"])

    with pytest.raises(
        InputError,
        match=r"meta_Toys\.json line 2 is neither JSON nor a Python literal \(.*\): "
        r"expected one JSON object or Python dict literal per line",
    ):
        convert_amazon_json(tmp_path)
    assert_no_pickles(tmp_path)


def test_convert_amazon_json_never_evaluates_meta_lines(tmp_path):
    marker = tmp_path / "pwned"
    write_amazon(tmp_path, meta=[META_LINES[0], f"__import__('os').system('touch {marker}')"])

    with pytest.raises(InputError, match=r"meta_Toys\.json line 2 is neither JSON nor a Python literal"):
        convert_amazon_json(tmp_path)
    assert not marker.exists()
    assert_no_pickles(tmp_path)


@pytest.mark.parametrize(
    "line, message",
    [
        ("{'asin': 'B2', 'categories': 'Toys'}", r"line 2 \(asin 'B2'\): categories is a plain string 'Toys'"),
        ("{'asin': 'B2'}", r"line 2 \(asin 'B2'\): categories is missing"),
        ("{'asin': 'B2', 'categories': [[]]}", r"line 2 \(asin 'B2'\): categories has an empty innermost list"),
        ("{'categories': [['Toys']]}", r"line 2 has no key 'asin'"),
    ],
    ids=["string", "missing", "empty-inner", "no-asin"],
)
def test_convert_amazon_json_checks_meta_fields(tmp_path, line, message):
    write_amazon(tmp_path, meta=[META_LINES[0], line])

    with pytest.raises(InputError, match=r"meta_Toys\.json " + message):
        convert_amazon_json(tmp_path)
    assert_no_pickles(tmp_path)


def test_convert_amazon_json_reports_a_corrupt_gzip(tmp_path):
    write_amazon(tmp_path, ".json.gz")
    many = [json.dumps(dict(REVIEW_LINES[0], reviewerID=f"A{i}")) for i in range(20000)]
    path = write_lines(tmp_path / "reviews_Toys_5.json.gz", many)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with pytest.raises(
        InputError,
        match=r"reviews_Toys_5\.json\.gz is a corrupt gzip file, failing at line \d+ \(.*\): "
        r"expected a complete gzip-compressed file of JSON lines",
    ) as caught:
        convert_amazon_json(tmp_path)
    assert "line 1 " not in str(caught.value)  # the lines before the damage were read
    assert_no_pickles(tmp_path)


def test_convert_amazon_json_reports_a_gz_file_that_is_not_gzip(tmp_path):
    write_amazon(tmp_path, ".json.gz")
    (tmp_path / "meta_Toys.json.gz").write_text("{'asin': 'B1'}\n")

    with pytest.raises(InputError, match=r"meta_Toys\.json\.gz is a corrupt gzip file, failing at line 1"):
        convert_amazon_json(tmp_path)
    assert_no_pickles(tmp_path)


def test_convert_amazon_json_reports_non_utf8_text(tmp_path):
    write_amazon(tmp_path)
    (tmp_path / "reviews_Toys_5.json").write_bytes(json.dumps(REVIEW_LINES[0]).encode() + b"\n\xff\xfe\n")

    with pytest.raises(InputError, match=r"reviews_Toys_5\.json line 2 is not UTF-8 text"):
        convert_amazon_json(tmp_path)
    assert_no_pickles(tmp_path)


def test_convert_amazon_json_leaves_neither_pickle_when_writing_fails(tmp_path, monkeypatch):
    write_amazon(tmp_path)
    real_replace = os.replace

    def replace_failing_for_reviews(source, target):
        if Path(target).name == "reviews.pkl":
            raise OSError("disk full")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_failing_for_reviews)

    with pytest.raises(OSError, match="disk full"):
        convert_amazon_json(tmp_path)
    assert_no_pickles(tmp_path)


# ---------------------------------------------------------------- convert_remap_pickle


def write_remap(raw_dir: Path, reviews_df, cate_list, counts, keys, protocol=pickle.HIGHEST_PROTOCOL) -> Path:
    # Exactly how the original DIN script writes remap.pkl.
    path = raw_dir / "remap.pkl"
    with open(path, "wb") as f:
        pickle.dump(reviews_df, f, protocol)
        pickle.dump(cate_list, f, protocol)
        pickle.dump(counts, f, protocol)
        pickle.dump(keys, f, protocol)
    return path


def remap_parts():
    reviews_df = pd.DataFrame(
        {"reviewerID": [0, 0, 1, 2], "asin": [2, 0, 1, 2], "unixReviewTime": [1400000000, 1400000100, 1400000200, 5]}
    )
    cate_list = np.array([1, 0, 1], dtype=np.int32)
    counts = (3, 3, 2, 4)
    keys = (["B1", "B2", "B3"], ["Books", "Toys"], ["A1", "A2", "A3"])
    return reviews_df, cate_list, counts, keys


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_convert_remap_pickle_round_trip(tmp_path, protocol):
    write_remap(tmp_path, *remap_parts(), protocol=protocol)

    info = convert_remap_pickle(tmp_path)

    assert info == {"users": 3, "items": 3, "categories": 2, "reviews_rows": 4}
    assert pd.read_pickle(tmp_path / "meta.pkl")["categories"].tolist() == [[["Toys"]], [["Books"]], [["Toys"]]]
    reviews, _ = load_reviews(tmp_path / "reviews.pkl")
    meta, _ = load_meta(tmp_path / "meta.pkl")
    assert_frame_is(
        reviews,
        {"reviewerID": ["A1", "A1", "A2", "A3"], "asin": ["B3", "B1", "B2", "B3"],
         "unixReviewTime": [1400000000, 1400000100, 1400000200, 5]},
    )
    assert_frame_is(meta, {"asin": ["B1", "B2", "B3"], "category": ["Toys", "Books", "Toys"]})


@pytest.mark.parametrize("name", old_pickles("remap"))
def test_convert_remap_pickle_from_old_pandas(tmp_path, name):
    shutil.copy(FIXTURES / name, tmp_path / "remap.pkl")

    convert_remap_pickle(tmp_path)

    reviews, _ = load_reviews(tmp_path / "reviews.pkl")
    meta, _ = load_meta(tmp_path / "meta.pkl")
    assert reviews["reviewerID"].tolist() == ["A1", "A1", "A2"]
    assert reviews["asin"].tolist() == ["B2", "B1", "B2"]
    assert_frame_is(meta, {"asin": ["B1", "B2"], "category": ["Toys", "Books"]})


def remap_with(**changes):
    reviews_df, cate_list, counts, keys = remap_parts()
    parts = {"reviews_df": reviews_df, "cate_list": cate_list, "counts": counts, "keys": keys}
    parts.update(changes)
    return parts["reviews_df"], parts["cate_list"], parts["counts"], parts["keys"]


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"reviews_df": remap_parts()[0].assign(asin=[2, 0, 3, 2])},
            r"remap\.pkl reviews_df column asin row 2 holds id 3, outside asin_key \(3 entries\): "
            r"expected 0-based ids 0\.\.2",
        ),
        (
            {"reviews_df": remap_parts()[0].assign(reviewerID=[0, -1, 1, 2])},
            r"remap\.pkl reviews_df column reviewerID row 1 holds id -1, outside revi_key",
        ),
        (
            {"reviews_df": remap_parts()[0].assign(asin=[2.0, 0.0, 1.0, 2.0])},
            r"remap\.pkl reviews_df column asin has dtype float64: expected 0-based integer ids into asin_key",
        ),
        (
            {"reviews_df": remap_parts()[0].drop(columns=["unixReviewTime"])},
            r"remap\.pkl reviews_df has no column 'unixReviewTime'",
        ),
        (
            {"cate_list": np.array([1, 5, 0])},
            r"remap\.pkl cate_list entry 1 holds id 5, outside cate_key \(2 entries\)",
        ),
        (
            {"cate_list": np.array([1, 0])},
            r"remap\.pkl cate_list has 2 entries but asin_key has 3: expected one cate id per item id",
        ),
        ({"cate_list": "Books"}, r"remap\.pkl cate_list is 'Books' \(str\): expected a 1-D integer array"),
        ({"counts": (9, 3, 2, 4)}, r"remap\.pkl user_count is 9 but the data has 3"),
        ({"counts": (3, 3, 2)}, r"remap\.pkl object 3 is \(3, 3, 2\) \(tuple\): expected \(user_count"),
        ({"keys": (["B1", "B2", "B3"], ["Books", "Toys"])}, r"remap\.pkl object 4 is .*: expected the tuple"),
        (
            {"keys": (["B1", 2, "B3"], ["Books", "Toys"], ["A1", "A2", "A3"])},
            r"remap\.pkl asin_key entry 1 is 2 \(int\)",
        ),
    ],
    ids=["item-id-too-big", "negative-user", "float-ids", "no-time", "cate-id-too-big", "cate-list-short",
         "cate-list-str", "counts-mismatch", "counts-short", "keys-short", "key-not-str"],
)
def test_convert_remap_pickle_rejects_inconsistent_files(tmp_path, changes, message):
    write_remap(tmp_path, *remap_with(**changes))

    with pytest.raises(InputError, match=message):
        convert_remap_pickle(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["remap.pkl"]


def test_convert_remap_pickle_needs_four_objects(tmp_path):
    path = tmp_path / "remap.pkl"
    reviews_df, cate_list, counts, _ = remap_parts()
    with open(path, "wb") as f:
        for obj in (reviews_df, cate_list, counts):
            pickle.dump(obj, f)

    with pytest.raises(InputError, match=r"remap\.pkl holds only 3 pickled object\(s\): expected 4 objects"):
        convert_remap_pickle(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["remap.pkl"]


def test_convert_remap_pickle_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"remap\.pkl does not exist: expected the 4 objects of the original DIN"):
        convert_remap_pickle(tmp_path)


@pytest.mark.parametrize("chunk_bytes", [1, 3, 7, 64, 1 << 20])
@pytest.mark.parametrize("gz", [False, True])
def test_json_lines_are_numbered_exactly_across_chunk_boundaries(tmp_path, monkeypatch, chunk_bytes, gz):
    from pipeline.raw import amazon_json

    text = "a1\n\n  \nbb22\n" + "\n" * 70 + "  c333 \n\r\n" + "x" * 80 + "\nd"  # dense and sparse stretches
    path = tmp_path / ("reviews_T.json.gz" if gz else "reviews_T.json")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    monkeypatch.setattr(amazon_json, "_CHUNK_BYTES", chunk_bytes)
    expected = [(number, line) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]
    assert [(n, line.strip()) for n, line in amazon_json._numbered_lines(path, amazon_json.JsonLimits())] == \
        [(n, line.strip()) for n, line in expected]
    with pytest.raises(InputError, match=r"reviews_T\.json(\.gz)? line 77 is longer than 79 bytes"):
        list(amazon_json._numbered_lines(path, amazon_json.JsonLimits(max_line_bytes=79)))


def test_first_blank_finds_empty_and_unicode_whitespace_ids():
    from pipeline.raw.frames import first_blank

    assert first_blank(["a", "b c", " d"]) is None
    assert first_blank(["a", "\u3000", ""]) == 1
    assert first_blank(pd.array(["a", "b", ""], dtype=TEXT_DTYPE)) == 2
