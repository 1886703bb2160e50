"""Tests for pipeline.untrusted.unpickler: data pickles load, code-running pickles never run."""
from __future__ import annotations

import collections
import gzip
import importlib
import io
import os
import pickle
import struct
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from din_common.errors import InputError
from pipeline.untrusted.unpickler import safe_load

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pickles"
PANDAS_MAJOR = int(pd.__version__.split(".")[0])
PROTOCOLS = tuple(range(2, pickle.HIGHEST_PROTOCOL + 1))

# The frames tests/fixtures/make_old_pickles.py writes with old pandas.
# dtype=object explicitly: pandas 3 would infer its str dtype from the strings.
OLD_REVIEWS = pd.DataFrame(
    {
        "reviewerID": pd.Series(["A1", "A2", "A1", "A3"], dtype=object),
        "asin": pd.Series(["B1", "B2", "B2", "B1"], dtype=object),
        "reviewerName": pd.Series(["Ann", None, "Ann", "Cy"], dtype=object),
        "overall": [5.0, 3.0, 4.0, 1.0],
        "unixReviewTime": np.array([1400000000, 1400000100, 1400000200, 1400000300], dtype="int64"),
    }
)
OLD_META = pd.DataFrame(
    {
        "asin": pd.Series(["B1", "B2", "B3"], dtype=object),
        "categories": [[["Books", "Fiction"]], [["Toys & Games", "Puzzles"]], [["Books"], ["Electronics", "Cables"]]],
        "title": pd.Series(["A novel", "A puzzle", None], dtype=object),
    }
)


def write_pickle(path: Path, obj, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol)
    return path


def pandas3_reviews() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "reviewerID": ["A1B2C3D4E5F6G7", "A7", "A1B2C3D4E5F6G7"],
            "asin": ["B00XXXXXXX", "B00YYYYYYY", "B00YYYYYYY"],
            "unixReviewTime": np.array([1400000000, 1400000001, 1400000002], dtype=np.int64),
            "overall": [5.0, 4.0, 1.0],
            "categories": [[["Books", "Fiction"]], [["Toys"]], [[]]],
        }
    )


# ---------------------------------------------------------------- data that must load


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pandas3_frame_with_pyarrow_strings_loads_at_every_protocol(tmp_path, protocol):
    frame = pandas3_reviews()
    if PANDAS_MAJOR < 3:  # pandas 1.x/2.x on the Ascend stacks: ask for pyarrow strings
        frame = frame.astype({"reviewerID": "string[pyarrow]", "asin": "string[pyarrow]"})
    path = tmp_path / "reviews.pkl"
    frame.to_pickle(path, protocol=protocol)

    loaded = safe_load(path)

    pd.testing.assert_frame_equal(loaded, frame)
    assert str(loaded["reviewerID"].dtype) == str(frame["reviewerID"].dtype)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_object_column_frame_loads_at_every_protocol(tmp_path, protocol):
    frame = pandas3_reviews().astype({"reviewerID": object, "asin": object})
    path = tmp_path / "reviews.pkl"
    frame.to_pickle(path, protocol=protocol)

    pd.testing.assert_frame_equal(safe_load(path), frame)


@pytest.mark.parametrize("protocol", (2, PROTOCOLS[-1]))
def test_other_pandas_data_types_load(tmp_path, protocol):
    arrow_columns = {} if not hasattr(pd, "ArrowDtype") else {  # pandas >= 2
        "arrow_list": pd.array([[["a"]], [["b", "c"]], None], dtype=pd.ArrowDtype(pa.list_(pa.list_(pa.string())))),
        "arrow_int": pd.array([1, None, 3], dtype=pd.ArrowDtype(pa.int64())),
    }
    frame = pd.DataFrame(
        {
            "python_str": pd.array(["x", None, "z"], dtype="string[python]"),
            **arrow_columns,
            "nullable": pd.array([1, None, 3], dtype="Int64"),
            "category": pd.Categorical(["a", "b", "a"]),
            "when": pd.to_datetime([1, 2, 3], unit="s"),
            "when_utc": pd.to_datetime([1, 2, 3], unit="s", utc=True),
            "flag": pd.array([True, None, False], dtype="boolean"),
        },
        index=pd.MultiIndex.from_tuples([("u", 1), ("u", 2), ("v", 1)]),
    )
    path = write_pickle(tmp_path / "frame.pkl", frame, protocol)

    pd.testing.assert_frame_equal(safe_load(path), frame)


def test_caches_pandas_writes_load_and_are_computed_again(tmp_path):
    # pandas writes `_cache` of a masked array once its dtype was read (and pandas 3 of every
    # Arrow string array): such files load as pandas reads them, without taking the cache.
    frame = pd.DataFrame({"nullable": pd.array([1, None, 3], dtype="Int64"), "text": ["a", "b", "c"]})
    frame["nullable"].array.dtype, frame["nullable"].array._can_hold_na  # fill the caches
    path = write_pickle(tmp_path / "frame.pkl", frame)
    assert b"_cache" in path.read_bytes()
    pd.testing.assert_frame_equal(safe_load(path), pd.read_pickle(path))

    frame["nullable"].array._cache["dtype"] = pd.Float64Dtype()  # a lie in a key pandas does cache
    path = write_pickle(tmp_path / "forged.pkl", frame)
    assert pd.read_pickle(path)["nullable"].array.dtype == pd.Float64Dtype()  # pandas takes it
    assert safe_load(path)["nullable"].array.dtype == pd.Int64Dtype()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_plain_python_and_numpy_objects_load(tmp_path, protocol):
    payload = {
        "list": [1, 2.5, "x", None, True],
        "tuple": (np.int64(3), np.float32(2.0), np.str_("s")),
        "nested": [[["Books"]], {"k": b"\x00\xffbytes"}],
        "array": np.arange(6, dtype=np.int32).reshape(2, 3),
        "objects": np.array(["a", ["b"]], dtype=object),
        "ordered": collections.OrderedDict(a=1),
        "series": pd.Series([1, 2], name="s"),
        "set": {1, 2},
    }
    path = write_pickle(tmp_path / "things.pkl", payload, protocol)

    loaded = safe_load(path)

    assert loaded["list"] == payload["list"]
    assert loaded["tuple"] == payload["tuple"]
    assert loaded["nested"] == payload["nested"]
    np.testing.assert_array_equal(loaded["array"], payload["array"])
    assert loaded["objects"].tolist() == ["a", ["b"]]
    assert loaded["ordered"] == payload["ordered"]
    pd.testing.assert_series_equal(loaded["series"], payload["series"])
    assert loaded["set"] == {1, 2}


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in FIXTURES.glob("reviews_pd*_p*.pkl") if "pyarrow" not in p.name),
)
def test_old_pandas_reviews_fixture_loads(name):
    loaded = safe_load(FIXTURES / name)

    pd.testing.assert_frame_equal(loaded, OLD_REVIEWS, check_column_type=False)


def test_pandas2_pyarrow_string_fixture_loads():
    loaded = safe_load(FIXTURES / "reviews_pd2.2_pyarrow_p4.pkl")

    assert isinstance(loaded["asin"].dtype, pd.StringDtype)
    assert loaded["asin"].dtype.storage == "pyarrow"
    assert loaded["asin"].tolist() == ["B1", "B2", "B2", "B1"]


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("meta_pd*_p*.pkl")))
def test_old_pandas_meta_fixture_loads(name):
    pd.testing.assert_frame_equal(safe_load(FIXTURES / name), OLD_META, check_column_type=False)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("remap_pd*_p*.pkl")))
def test_four_objects_back_to_back(name):
    reviews, cate_list, counts, keys = safe_load(FIXTURES / name, n_objects=4)

    assert reviews["asin"].tolist() == [1, 0, 1]
    assert cate_list.tolist() == [1, 0]
    assert counts == (2, 2, 2, 3)
    assert keys == (["B1", "B2"], ["Books", "Toys"], ["A1", "A2"])


def test_gzip_compressed_pickle_loads(tmp_path):
    frame = pandas3_reviews()
    path = tmp_path / "reviews.pkl.gz"
    frame.to_pickle(path)  # compression inferred from .gz

    pd.testing.assert_frame_equal(safe_load(path), frame)


def old_style_timestamp_pickle() -> bytes:
    """A Timestamp pickled as pandas <= 1.2 did: Timestamp(value, freq, tz)."""

    class OldTimestamp:
        def __reduce__(self):
            return (pd.Timestamp, (1577836800000000000, "D", None))

    return pickle.dumps(OldTimestamp(), protocol=2)


def test_old_pandas_timestamp_reconstructor_loads(tmp_path):
    raw = old_style_timestamp_pickle()
    path = tmp_path / "old.pkl"
    path.write_bytes(raw)

    assert safe_load(path) == pd.Timestamp("2020-01-01")


# ---------------------------------------------------------------- code that must not run


class Payload:
    """Unpickling this calls `function(*args)`."""

    def __init__(self, function, *args):
        self.function = function
        self.args = args

    def __reduce__(self):
        return (self.function, self.args)


def assert_refused(path: Path, marker: Path, asked_for: str) -> None:
    with pytest.raises(InputError, match=rf"refusing to load .*{path.name}: it asks for .*{asked_for}") as caught:
        safe_load(path)
    assert "pickles can run code" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_os_system_is_refused_before_it_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = write_pickle(tmp_path / "reviews.pkl", Payload(os.system, f"touch {marker}"), protocol)

    assert_refused(path, marker, r"os\.system")


@pytest.mark.parametrize("protocol", (2, PROTOCOLS[-1]))
@pytest.mark.parametrize(
    "function, asked_for",
    [
        (eval, r"builtins\.eval"),
        (exec, r"builtins\.exec"),
        (subprocess.Popen, r"subprocess\.Popen"),
        (subprocess.check_output, r"subprocess\.check_output"),
        (importlib.import_module, r"importlib\.import_module"),
    ],
)
def test_code_running_callables_are_refused(tmp_path, protocol, function, asked_for):
    marker = tmp_path / "pwned"
    if function in (eval, exec):
        payload = Payload(function, f"__import__('os').system('touch {marker}')")
    elif function is importlib.import_module:
        payload = Payload(function, "antigravity")
    else:
        payload = Payload(function, ["touch", str(marker)])
    path = write_pickle(tmp_path / "meta.pkl", payload, protocol)

    assert_refused(path, marker, asked_for)


@pytest.mark.parametrize(
    "function, args, asked_for",
    [
        (pd.read_csv, ("x.csv",), r"pandas.*read_csv"),
        (pd.read_pickle, ("x.pkl",), r"pandas.*read_pickle"),
        (np.load, ("x.npy",), r"numpy.*load"),
        (pd.HDFStore, ("created.h5", "w"), r"pandas.*HDFStore"),  # a class, but it opens files
        (np.memmap, ("created.bin", np.uint8, "w+", 0, (4,)), r"numpy.*memmap"),  # an ndarray subclass
        (getattr, (pd.DataFrame, "to_csv"), r"builtins\.getattr"),
    ],
)
def test_file_reading_and_gadget_functions_are_refused(tmp_path, monkeypatch, function, args, asked_for):
    monkeypatch.chdir(tmp_path)
    path = write_pickle(tmp_path / "reviews.pkl", Payload(function, *args), 4)

    with pytest.raises(InputError, match=rf"it asks for {asked_for}"):
        safe_load(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.pkl"]


def hand_written_call(module: str, name: str, *args: str) -> bytes:
    """Protocol-2 opcodes for module.name(*args), naming exactly what a crafted file could."""
    out = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n("
    for arg in args:
        data = arg.encode()
        out += b"X" + struct.pack("<I", len(data)) + data
    return out + b"tR."


@pytest.mark.parametrize(
    "module, name, asked_for",
    [
        ("posix", "system", r"posix\.system \(os\.system\)"),
        ("__builtin__", "eval", r"builtins\.eval"),  # Python 2 name
        ("pandas.io.common", "os.system", r"pandas\.io\.common\.os\.system"),  # dotted name via a module attribute
        ("pandas.core.frame", "os", r"pandas\.core\.frame\.os"),
        ("antigravity", "geohash", r"antigravity\.geohash"),  # never imported
    ],
)
def test_hand_crafted_names_are_refused(tmp_path, module, name, asked_for):
    marker = tmp_path / "pwned"
    path = tmp_path / "reviews.pkl"
    path.write_bytes(hand_written_call(module, name, f"touch {marker}"))

    assert_refused(path, marker, asked_for)


def build_on_global(module: str, name: str, attribute: str, value_opcodes: bytes) -> bytes:
    """Protocol-2 opcodes that BUILD (setattr) module.name.attribute = value on the global itself."""
    key = attribute.encode()
    return (
        b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n"
        + b"N}X" + struct.pack("<I", len(key)) + key + value_opcodes + b"s\x86b."
    )


@pytest.mark.parametrize("module, name, attribute, value, message", [
    ("pandas.core.frame", "DataFrame", "to_csv", b"K\x01", r"definition of pandas\..*DataFrame"),
    ("pandas.core.indexes.base", "_new_Index", "__defaults__", b"K\x01\x85", r"definition of .*_new_Index"),
], ids=["class", "function"])
def test_changing_an_allowed_global_is_refused_and_undone(tmp_path, module, name, attribute, value, message):
    target = getattr(importlib.import_module(module), name)
    before = getattr(target, attribute)
    path = tmp_path / "reviews.pkl"
    path.write_bytes(build_on_global(module, name, attribute, value))

    with pytest.raises(InputError, match=r"it asks for a change to the " + message):
        safe_load(path)
    assert getattr(target, attribute) is before


def test_codecs_encode_only_for_latin1_bytes(tmp_path):
    path = tmp_path / "reviews.pkl"
    path.write_bytes(hand_written_call("_codecs", "encode", "payload", "rot13"))

    with pytest.raises(InputError, match=r"it asks for _codecs\.encode with encoding 'rot13'"):
        safe_load(path)


@pytest.mark.parametrize("protocol", (2, PROTOCOLS[-1]))
def test_payload_hidden_inside_a_dataframe_is_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    frame = pd.DataFrame({"asin": ["B1"], "categories": [Payload(os.system, f"touch {marker}")]})
    path = write_pickle(tmp_path / "meta.pkl", frame, protocol)

    assert_refused(path, marker, r"os\.system")


def test_compat_fallback_applies_the_same_allow_list(tmp_path):
    # The old-style Timestamp makes the fast path fail first, so the payload
    # is met by the pandas compatibility unpickler.
    marker = tmp_path / "pwned"

    class OldTimestamp:
        def __reduce__(self):
            return (pd.Timestamp, (1577836800000000000, "D", None))

    path = write_pickle(tmp_path / "reviews.pkl", (OldTimestamp(), Payload(os.system, f"touch {marker}")), 2)

    assert_refused(path, marker, r"os\.system")


# ---------------------------------------------------------------- damaged files


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"reviews\.pkl does not exist: expected a pandas DataFrame"):
        safe_load(tmp_path / "reviews.pkl")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(InputError, match=r"is a directory"):
        safe_load(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "reviews.pkl"
    path.write_bytes(b"")

    with pytest.raises(InputError, match=r"reviews\.pkl is empty: expected a pandas DataFrame written by DataFrame"):
        safe_load(path)


@pytest.mark.parametrize("protocol", (2, PROTOCOLS[-1]))
def test_truncated_file(tmp_path, protocol):
    whole = pickle.dumps(pandas3_reviews(), protocol)
    path = tmp_path / "reviews.pkl"
    path.write_bytes(whole[: len(whole) // 2])

    # Cut inside a name, the fragment is refused as a name; elsewhere the file is short.
    with pytest.raises(
        InputError,
        match=r"reviews\.pkl is truncated or not a pickle .*: expected a pandas DataFrame written by DataFrame\.to_pickle"
        r"|refusing to load .*reviews\.pkl: it asks for",
    ):
        safe_load(path)


@pytest.mark.parametrize("content", [b"reviewerID,asin\nA1,B1\n", b"\x80\x05garbage", b"PAR1\x00\x00"])
def test_not_a_pickle(tmp_path, content):
    path = tmp_path / "reviews.pkl"
    path.write_bytes(content)

    with pytest.raises(InputError, match=r"reviews\.pkl is truncated or not a pickle"):
        safe_load(path)


def test_corrupt_gzip_pickle(tmp_path):
    path = tmp_path / "reviews.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(pandas3_reviews()))[:40])

    with pytest.raises(InputError, match=r"reviews\.pkl\.gz is truncated or not a pickle"):
        safe_load(path)


def test_fewer_objects_than_asked(tmp_path):
    path = tmp_path / "remap.pkl"
    with open(path, "wb") as handle:
        pickle.dump([1], handle)
        pickle.dump([2], handle)

    with pytest.raises(InputError, match=r"remap\.pkl holds only 2 pickled object\(s\): expected 4 objects"):
        safe_load(path, n_objects=4)


# ---------------------------------------------------------------- the same values as C pickle

# Text forms of protocols 0/1 where the pure-Python unpickler and C pickle once differed, and
# their neighbours: each must load as C pickle loads it, or be refused.
TEXT_FORMS = [
    b"I1\n.", b"I01\n.", b"I00\n.", b"I+1\n.", b"I-0\n.", b"I 1\n.", b"I1_0\n.", b"I0x10\n.", b"I010\n.", b"I-5\n.",
    b"I99999999999999999999\n.", b"I1\x002\n.", b"L1L\n.", b"L-1\n.", b"L0x10\n.", b"L1_0L\n.", b"L 7L\n.",
    b"F1.5\n.", b"F1e999\n.", b"Finf\n.", b"F-inf\n.", b"F1_0\n.", b"F 1\n.", b"F-0.0\n.", b"F1e-5\n.", b"Fnan\n.",
    b"S'abc'\n.", b"S'J\\xc3\\xbc'\n.", b"S'J\xc3\xbc'\n.", b"S\"q\"\n.", b"S'x\n.", b"T\x03\x00\x00\x00abc.",
    b"T\x02\x00\x00\x00\xc3\xbc.", b"U\x02\xc3\xbc.", b"U\x03abc.", b"Vabc\n.", b"V\\u00fc\n.",
    b"(I1\nI2\nd.", b"(I1\nI2\nl.", b"(dI1\nI2\ns.", b"(lI1\na.",
]
PLAIN_VALUES = [1, True, False, -1, 2**70, -2**70, 1.5, -0.0, float("inf"), "ü", "a\nb", b"\xff\x00", bytearray(b"ab"),
                (1, 2), [1, [2, (3,)]], {"a": 1, 2: [3]}, {1, 2}, frozenset({"x"}), None, [[]] * 3,
                collections.OrderedDict(a=1), complex(1, 2)]


def c_pickle_or_error(data: bytes):
    try:
        return pickle.loads(data), None
    except Exception as error:  # noqa: BLE001  (any refusal)
        return None, error


def same_value(ours, theirs) -> bool:
    return type(ours) is type(theirs) and repr(ours) == repr(theirs)


@pytest.mark.parametrize("data", TEXT_FORMS + [pickle.dumps(value, protocol) for value in PLAIN_VALUES
                                               for protocol in range(pickle.HIGHEST_PROTOCOL + 1)])
def test_each_edge_case_loads_as_c_pickle_loads_it_or_is_refused(data):
    theirs, their_error = c_pickle_or_error(data)
    try:
        ours = safe_load(io.BytesIO(data))
    except InputError:
        return  # a refusal is always allowed
    assert their_error is None, f"C pickle refuses {data!r} ({their_error!r}); we read {ours!r}"
    assert same_value(ours, theirs), (data, ours, theirs)


def test_the_plain_values_and_canonical_text_forms_do_load():
    for data in (b"I01\n.", b"I-5\n.", b"L1L\n.", b"F1.5\n.", b"S'abc'\n.", b"(dI1\nI2\ns."):
        assert same_value(safe_load(io.BytesIO(data)), pickle.loads(data))
    for value in PLAIN_VALUES:
        assert same_value(safe_load(io.BytesIO(pickle.dumps(value, 2))), value)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.pkl")))
def test_each_fixture_loads_as_trusted_pandas_reads_it(name):
    path = FIXTURES / name
    n_objects = 4 if name.startswith("remap") else 1
    try:
        with open(path, "rb") as handle:
            theirs = [pd.read_pickle(handle) if n_objects == 1 else pickle.load(handle) for _ in range(n_objects)]
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"this pandas cannot read {name} itself ({type(error).__name__})")
    ours = safe_load(path, n_objects=n_objects)
    for mine, trusted in zip([ours] if n_objects == 1 else ours, theirs):
        if isinstance(trusted, pd.DataFrame):
            pd.testing.assert_frame_equal(mine, trusted)
        else:
            assert same_value(mine, trusted)
