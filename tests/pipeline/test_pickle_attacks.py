"""Hostile pickles, one small payload per class of attack, made here from opcodes or objects.

Two levels: `safe_load` alone (layer 2, on every supported interpreter), and
the whole `luigi --module pipeline RemapIds` run (both layers, Python 3.8+
for the audit hook), which must end with exit code 30, one `ERROR:` line,
nothing under remap/, no program started and no file opened by the payload.
"""
from __future__ import annotations

import gzip
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from din_common.errors import InputError
from pipeline.untrusted.unpickler import safe_load

REPO = Path(__file__).resolve().parents[2]
REFUSED = r"refusing to load .*: it asks for "


# ---------------------------------------------------------------- opcodes


def op_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def op_bytes(data: bytes) -> bytes:
    return b"C" + bytes([len(data)]) + data


def op_int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def op_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def op_call(function: bytes, *args: bytes) -> bytes:
    return function + op_tuple(*args) + b"R"


def pickle_of(*opcodes: bytes) -> bytes:
    return b"\x80\x02" + b"".join(opcodes) + b"."


def i8_dtype(flags: int = 0, fields: bytes = b"N") -> bytes:
    """numpy.dtype('i8') with the BUILD state numpy writes, flags and fields as given."""
    state = op_tuple(op_int(3), op_str("<"), b"N", fields, fields, op_int(-1), op_int(-1), op_int(flags))
    return op_call(op_global("numpy", "dtype"), op_str("i8"), b"\x89", b"\x88") + state + b"b"


class Reduce:
    """Pickles as `function(*args)`, with an optional BUILD state."""

    def __init__(self, function, *args, state=None):
        self.function, self.args, self.state = function, args, state

    def __reduce__(self):
        return (self.function, self.args) if self.state is None else (self.function, self.args, self.state)


def out_of_range_block_frame() -> bytes:
    from pandas._libs.internals import BlockPlacement
    from pandas.core.internals.blocks import new_block
    from pandas.core.internals.managers import BlockManager

    values = np.array([[1, 2]])
    block = new_block(values, placement=BlockPlacement(slice(0, 1)), ndim=2)
    block.mgr_locs = BlockPlacement(slice(5, 6))  # column 5 of a one-column frame
    return pickle.dumps(Reduce(BlockManager, (block,), [pd.Index(["a"]), pd.RangeIndex(2)]), 2)


def shared_reference_list(depth: int = 60) -> list:
    """A few hundred bytes pickled; its repr would be 2**60 items long."""
    node: list = [{"leaf": 1}]
    for _ in range(depth):
        node = [node, node]
    return node


def billion_laughs_meta() -> bytes:
    categories = np.empty(1, dtype=object)
    categories[0] = shared_reference_list()  # numpy would walk the nested lists of np.array([...])
    return pickle.dumps(pd.DataFrame({"asin": ["B1"], "categories": categories}), 2)


def none_pop_gzip() -> bytes:
    return gzip.compress(b"\x80\x02" + b"N0" * (8 << 20) + b"N.", 9)


def masked_int_over_floats() -> bytes:
    """An Int64 array whose data is float64: pandas would read 1165104000.9 as 1165104000."""
    return new_with_state("pandas.core.arrays.integer", "IntegerArray",
                          {"_data": np.array([1165104000.9, 1.2e19]), "_mask": np.zeros(2, dtype=bool)})


def masked_with_key(key: str) -> bytes:
    state = {"_data": np.array([1, 2]), "_mask": np.zeros(2, dtype=bool), key: {"inferred_type": "string"}}
    return new_with_state("pandas.core.arrays.integer", "IntegerArray", state)


def new_with_state(module: str, name: str, state: dict) -> bytes:
    """NEWOBJ of a table class, then BUILD with `state` (as pickle writes a pandas array)."""
    return b"\x80\x02" + op_global(module, name) + b")\x81" + pickle.dumps(state, 2)[2:-1] + b"b."


def index_with_forged_cache() -> bytes:
    """An Index of numbers whose cache claims strings (what the strings-only check would have asked)."""
    from pandas.core.indexes.base import _new_Index

    return pickle.dumps(Reduce(_new_Index, pd.Index, {"data": np.array([1400, 3.5], dtype=object)},
                               state={"_cache": {"inferred_type": "string"}}), 2)


def array_changed_after_check() -> bytes:
    """An ndarray (as Categorical codes or a block placement are) set to 2023 after it was built."""
    array = pickle.dumps(np.array([0, 1]), 2)[2:-1]  # without PROTO and STOP
    return b"\x80\x02" + array + b"q\xf0" + b"0" + b"h\xf0" + op_int(1) + op_int(2023) + b"s."


def list_changed_after_use() -> bytes:
    """set([1]) built from a list, then the list appended to: checked, then changed."""
    return (b"\x80\x02]q\xf0J\x01\x00\x00\x00a" + op_global("builtins", "set") + b"h\xf0\x85R0"
            + b"h\xf0J\x02\x00\x00\x00a.")


def build_twice() -> bytes:
    """A second BUILD on a checked Categorical's dtype."""
    dtype = pickle.dumps(pd.CategoricalDtype(["a"]), 2)[2:-1]
    return b"\x80\x02" + dtype + b"}" + op_str("ordered") + b"\x88sb."


def colliding_int_keys(n: int = 20_000) -> bytes:
    """A dict whose int keys all hash to 0 (multiples of 2**61 - 1): quadratic to build."""
    return pickle.dumps({k * (2**61 - 1): 0 for k in range(1, n + 1)}, 2)


# (id, file, bytes, regex of the one error line)
PAYLOADS = [
    ("import-cpuinfo", "reviews.pkl", op_global("numpy.distutils.cpuinfo", "X") + b".",
     REFUSED + r"numpy\.distutils\.cpuinfo\.X"),
    ("import-f2py-tests", "reviews.pkl", pickle_of(op_global("numpy.f2py.tests.util", "build_meson")),
     REFUSED + r"numpy\.f2py\.tests\.util"),
    ("import-f2py-main", "reviews.pkl", pickle_of(op_global("numpy.f2py.__main__", "main")), REFUSED + r"numpy\.f2py"),
    ("import-pandas-tests", "reviews.pkl",
     pickle_of(op_global("pandas.tests.config.test_localization", "X")), REFUSED + r"pandas\.tests"),
    ("import-antigravity", "reviews.pkl", pickle_of(op_global("antigravity", "geohash")), REFUSED + r"antigravity"),
    ("tzfile-passwd", "reviews.pkl", pickle_of(op_call(op_global("dateutil.tz.tz", "tzfile"), op_str("/etc/passwd"))),
     REFUSED + r"dateutil\.tz\.tz\.tzfile"),
    ("tzfile-stdin", "reviews.pkl", pickle_of(op_call(op_global("dateutil.tz", "tzfile"), op_str("/dev/stdin"))),
     REFUSED + r"dateutil\.tz\.tzfile"),
    ("tz-dtype-path", "reviews.pkl", pickle_of(op_call(op_global("pandas.core.dtypes.dtypes", "DatetimeTZDtype"),
                                                       op_str("ns"), op_str("dateutil//etc/passwd"))),
     REFUSED + r"a call of pandas.*DatetimeTZDtype"),
    ("timestamp-tz-path", "reviews.pkl",
     pickle_of(op_call(op_global("pandas._libs.tslibs.timestamps", "_unpickle_timestamp"), op_int(0), b"N",
                       op_str("dateutil//etc/passwd"))), REFUSED + r".*_unpickle_timestamp with unusual arguments"),
    ("reconstructor-tzfile", "reviews.pkl",
     pickle_of(op_call(op_global("copyreg", "_reconstructor"), op_global("dateutil.tz.tz", "tzfile"),
                       op_global("dateutil.tz.tz", "tzfile"), op_str("/etc/passwd"))), REFUSED + r"dateutil"),
    ("forged-object-dtype", "reviews.pkl",
     pickle_of(op_call(op_global("numpy.core.multiarray", "scalar"), i8_dtype(flags=63), op_bytes(b"\x41" * 8))),
     REFUSED + r"numpy\.dtype with a dtype whose flags or sizes were altered"),
    ("forged-struct-dtype", "reviews.pkl", pickle_of(i8_dtype(fields=b"}")),
     REFUSED + r"numpy\.dtype state with subarrays, fields"),
    ("void-dtype", "reviews.pkl", pickle_of(op_call(op_global("numpy", "dtype"), op_str("V8"), b"\x89", b"\x88")),
     REFUSED + r"numpy\.dtype 'V8'"),
    ("array-short-data", "reviews.pkl",
     pickle_of(op_call(op_global("numpy.core.multiarray", "_reconstruct"), op_global("numpy", "ndarray"),
                       op_tuple(op_int(0)), op_bytes(b"b")),
               op_tuple(op_int(1), op_tuple(op_int(1000)), i8_dtype(), b"\x89", op_bytes(b"\x00" * 8)), b"b"),
     REFUSED + r"a numpy\.ndarray whose data does not match"),
    ("block-out-of-range", "reviews.pkl", out_of_range_block_frame(),
     REFUSED + r"a pandas BlockManager placed outside the 1 columns"),
    ("build-on-class", "reviews.pkl",
     pickle_of(op_global("pandas.core.frame", "DataFrame"), b"N}", op_str("__bases__"), b"N\x85s\x86b"),
     REFUSED + r"a change to the definition of pandas.*DataFrame"),
    ("frozenlist-bases", "reviews.pkl",
     pickle_of(op_global("pandas.core.indexes.frozen", "FrozenList"), b"N}", op_str("__bases__"), b"N\x85s\x86b"),
     REFUSED + r"pandas\.core\.indexes\.frozen\.FrozenList"),
    ("huge-bytearray", "reviews.pkl",
     pickle_of(op_call(op_global("builtins", "bytearray"), b"\x8a\x05\x00\x28\x6b\xee\x00")),  # 4e9
     REFUSED + r"builtins\.bytearray of"),
    ("huge-set", "reviews.pkl",
     pickle_of(op_call(op_global("builtins", "set"),
                       op_call(op_global("builtins", "range"), b"\x8a\x06\x00\x10\xa5\xd4\xe8\x00"))),  # 1e12
     REFUSED + r"builtins\.set of"),
    ("huge-itemsize", "reviews.pkl",
     pickle_of(op_call(op_global("numpy", "dtype"), op_str("U9999999"), b"\x89", b"\x88")),
     REFUSED + r"numpy\.dtype with a dtype whose flags or sizes"),
    ("build-on-int", "reviews.pkl", pickle_of(op_int(1), b"}", op_str("a"), op_int(1), b"sb"),
     REFUSED + r"a BUILD state for a int"),
    ("deep-nesting", "reviews.pkl", b"\x80\x02" + b"]" * 100000 + b"a" * 99999 + b".",
     r"reviews\.pkl holds a builtins\.list: expected a pandas DataFrame"),
    ("shared-references", "meta.pkl", billion_laughs_meta(),
     r"meta\.pkl column categories row 0 .*has categories\[-1\]\[-1\] = \[\[\[\[\.\.\.\]"),
    ("gzip-none-pop", "reviews.pkl", none_pop_gzip(), r"reviews\.pkl asks for more than the \d+ bytes it can hold"),
    ("huge-bytes-length", "reviews.pkl", pickle_of(b"\x8e" + struct.pack("<Q", 1 << 40) + b"xyz"),
     r"reviews\.pkl is truncated or not a pickle of data"),
    ("huge-bytearray-length", "reviews.pkl", pickle_of(b"\x96" + struct.pack("<Q", 1 << 40) + b"xyz"),
     r"reviews\.pkl is truncated or not a pickle of data"),
    ("inst-bytearray", "reviews.pkl", b"(I2400000000\nibuiltins\nbytearray\n.", REFUSED + r"an INST opcode"),
    ("obj-tz-dtype", "reviews.pkl",
     b"\x80\x02(" + op_global("pandas.core.dtypes.dtypes", "DatetimeTZDtype") + op_str("ns")
     + op_str("dateutil//etc/passwd") + b"o.", REFUSED + r"an OBJ opcode"),
    ("setitem-on-checked-array", "reviews.pkl", array_changed_after_check(),
     REFUSED + r"SETITEM on a ndarray that is not a new plain container"),
    ("append-after-use", "reviews.pkl", list_changed_after_use(),
     REFUSED + r"APPEND on a list that is not a new plain container"),
    ("build-twice", "reviews.pkl", build_twice(), REFUSED + r"a change to a CategoricalDtype after it was checked"),
    ("masked-int-over-floats", "reviews.pkl", masked_int_over_floats(),
     REFUSED + r"a IntegerArray over float64 data, not the dtype it declares"),
    ("masked-unknown-key", "reviews.pkl", masked_with_key("_inferred"),
     REFUSED + r"the attribute '_inferred' in the state of a IntegerArray"),
    ("masked-forged-cache", "reviews.pkl", masked_with_key("_cache"),
     REFUSED + r"the cached value 'inferred_type' in the state of a IntegerArray"),
    ("masked-cache-not-dict", "reviews.pkl", new_with_state("pandas.core.arrays.integer", "IntegerArray", {
        "_data": np.array([1, 2]), "_mask": np.zeros(2, dtype=bool), "_cache": ["dtype"]}),
     REFUSED + r"a _cache of a IntegerArray that is a list, not a dict"),
    ("index-forged-cache", "reviews.pkl", index_with_forged_cache(), REFUSED + r"a BUILD on a \w*Index"),
    ("int-text-plus-one", "reviews.pkl", b"I+1\n.", r"reviews\.pkl is truncated or not a pickle of data .*INT"),
    ("py2-string-latin1", "reviews.pkl", b"S'J\xc3\xbcrgen'\np0\n.",
     r"reviews\.pkl is truncated or not a pickle of data \(UnicodeDecodeError"),
    ("colliding-int-keys", "reviews.pkl", colliding_int_keys(), REFUSED + r"more than 2000 dict keys"),
    ("escape-in-name", "reviews.pkl", pickle_of(op_global("os\x1b[2J\u202e", "system")),
     REFUSED + r"os\\x1b\[2J\\u202e\.system"),
]
IDS = [payload[0] for payload in PAYLOADS]


# ---------------------------------------------------------------- layer 2 alone


@pytest.mark.parametrize("case, file_name, data, message", PAYLOADS, ids=IDS)
def test_safe_load_refuses_each_payload_quickly(tmp_path, case, file_name, data, message):
    if case == "shared-references":
        pytest.skip("loads as data; the pipeline's check refuses it (see the pipeline test)")
    if case == "deep-nesting":
        pytest.skip("loads as data (a list); the pipeline's check refuses it")
    path = tmp_path / file_name
    path.write_bytes(data)
    before = set(sys.modules)
    start = time.monotonic()
    with pytest.raises(InputError, match=message.replace("meta\\.pkl", "").replace("reviews\\.pkl", "")) as caught:
        safe_load(path)
    assert time.monotonic() - start < 5.0
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 600
    assert not {m for m in set(sys.modules) - before if m.startswith(("numpy.", "pandas.", "dateutil", "antig"))}


def test_block_placements_are_checked_by_position_not_by_slice_end():
    from pipeline.untrusted.checks import Refused, placement_positions

    assert placement_positions(slice(2, 6, 2), 5, "a block").tolist() == [2, 4]  # how pandas writes columns 2, 4
    with pytest.raises(Refused, match="placed outside the 5 columns"):
        placement_positions(slice(2, 7, 2), 5, "a block")
    with pytest.raises(Refused, match="placed outside the 5 columns"):
        placement_positions(np.array([0, 5]), 5, "a block")


def test_shared_references_load_in_bounded_time(tmp_path):
    path = tmp_path / "meta.pkl"
    path.write_bytes(billion_laughs_meta())
    assert len(path.read_bytes()) < 3000
    start = time.monotonic()
    frame = safe_load(path)
    assert time.monotonic() - start < 5.0
    assert frame["categories"][0][0] is frame["categories"][0][1]


# ---------------------------------------------------------------- the whole pipeline

AUDIT_HOOK = r'''
import json, os, sys
_log = os.open(os.environ["DIN_AUDIT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
_PROCESS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
            "pty.spawn", "socket.connect")
def _hook(event, args):
    if event in _PROCESS or (event == "open" and not isinstance(args[0], int)):  # an int: fdopen
        confine = sys.modules.get("pipeline.untrusted.confine")
        confined = bool(getattr(confine, "CONFINED", False))
        if event == "open" and not confined and not str(args[0]).startswith(tuple(_WATCHED)):
            return
        record = {"pid": os.getpid(), "confined": confined, "event": event, "args": repr(args)[:300]}
        os.write(_log, (json.dumps(record) + "\n").encode())
_WATCHED = [p for p in os.environ.get("DIN_AUDIT_WATCH", "").split(os.pathsep) if p]
sys.addaudithook(_hook)
'''
# What the sandbox child itself starts before it reads a byte: ctypes.util finding libseccomp.
_OWN_PROGRAMS = ("ldconfig", "gcc", "cc", "ld", "objdump")


def good_raw(raw: Path) -> None:
    pd.DataFrame({"reviewerID": ["A1", "A1", "A2", "A2"], "asin": ["B1", "B2", "B1", "B2"],
                  "unixReviewTime": np.array([1, 2, 3, 4])}).to_pickle(raw / "reviews.pkl")
    pd.DataFrame({"asin": ["B1", "B2"], "categories": [[["E", "Cam"]], [["E", "TV"]]]}).to_pickle(raw / "meta.pkl")


def run_remap(data_dir: Path, audit_dir: Path, watched: list[str], luigi: tuple[str, ...] = ("-m", "luigi"),
              **environment: str) -> subprocess.CompletedProcess:
    """The RemapIds run; its `peak_bytes` is the highest summed RSS of its whole process tree, sampled."""
    (audit_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(audit_dir), str(REPO)]),
               DIN_AUDIT_LOG=str(audit_dir / "audit.jsonl"), DIN_AUDIT_WATCH=os.pathsep.join(watched), **environment)
    command = [sys.executable, *luigi, "--module", "pipeline", "RemapIds", "--paths-data-dir", str(data_dir),
               "--raw-source", "pickle", "--local-scheduler"]
    out, err = (tempfile.TemporaryFile(mode="w+") for _ in range(2))
    with out, err:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err, text=True)
        peak, deadline = 0, time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            peak = max(peak, tree_rss(process.pid))
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
        process.wait()
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(command, process.returncode, out.read(), err.read())
    result.peak_bytes = peak
    return result


def tree_rss(root: int) -> int:
    """Summed resident memory of `root` and all its descendants (shared pages counted in each: an upper bound)."""
    parents, rss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        parents[int(entry)] = int(fields[1])
        rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        tree.update(children)
        frontier.extend(children)
    return sum(rss.get(pid, 0) for pid in tree)


def audit_records(audit_dir: Path) -> list[dict]:
    path = audit_dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def started_program(record: dict) -> bool:
    """A process event that is not the sandbox's own (its start and its reply reader's, its fork per file, its library
    probe)."""
    if record["event"] == "open":
        return False
    if record["confined"]:
        return True
    return not ("pipeline.untrusted.sandbox" in record["args"] or "pipeline.untrusted.reply" in record["args"]
                or record["event"] == "os.fork"
                or any(f"'{p}'" in record["args"] or f"/{p}'" in record["args"] for p in _OWN_PROGRAMS))


@pytest.mark.skipif(sys.version_info < (3, 8), reason="audit hooks need Python 3.8")
@pytest.mark.parametrize("case, file_name, data, message", PAYLOADS, ids=IDS)
def test_the_pipeline_stops_each_payload(tmp_path, case, file_name, data, message):
    data_dir = tmp_path / "data"
    raw = data_dir / "raw"
    raw.mkdir(parents=True)
    good_raw(raw)
    (raw / file_name).write_bytes(data)
    audit_dir = tmp_path / "audit"
    audit_dir.mkdir()
    outside = ["/etc/passwd", "/dev/stdin", str(tmp_path / "meson.build")]

    start = time.monotonic()
    result = run_remap(data_dir, audit_dir, outside)

    assert result.returncode == 30, result.stderr[-3000:]
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert printable_line(errors[0]), errors[0]
    assert re.search(message, errors[0]), errors[0]
    assert "Traceback" not in result.stderr
    assert not (data_dir / "remap").exists() or not any((data_dir / "remap").rglob("*"))
    records = audit_records(audit_dir)
    assert any("pipeline.untrusted.sandbox" in r["args"] for r in records), "the audit hook saw the sandbox start"
    assert not [r for r in records if started_program(r)], "a program was started"
    assert not [r for r in records if r["event"] == "open"], "a file outside the data dir was opened"
    assert time.monotonic() - start < 60
    assert result.peak_bytes < 2 << 30, result.peak_bytes


# ---------------------------------------------------------------- a compromised child

COMPROMISED_MODES = {
    "deep-header": r"^\S*reviews\.pkl: the pickle sandbox exited normally but its reply did not start with one line",
    "no-newline": r"^\S*reviews\.pkl: the pickle sandbox exited normally but its reply did not start with one line",
    "escape-error": r"reviews\.pkl \\x1b\[2J\\x1b\]0;owned\\x07\\u202egnp\.exe\\x00",
    "escape-stderr": r"failed \(exit 1: boom \\x1b\[2J",
    "escape-layers": r"the pickle sandbox sent a malformed header",
    "escape-columns": r"sent reviews columns \[.*\\x1b\[2J.*\], expected",
    "huge-count": r"malformed (header|counts)",
    "compressed": r"sent compressed reviews data",
    "repeated": r"sent reviews as more than one record batch",
    "huge-body": r"sent unreadable reviews data",
    "flood": r"produced more than \d+ bytes of data",
    "hang": r"took longer than 10 s",
}
# Runs in its own process so that its peak memory (VmHWM) is the parent's alone.
COMPROMISED_RUNNER = r'''
import json, resource, sys, time
from pathlib import Path
from din_common.errors import InputError
from pipeline.untrusted import sandbox as pickle_sandbox
from pipeline.raw.sandbox_jobs import SANDBOX_JOBS
pickle_sandbox._CHILD_MODULE = "tests.helpers.compromised_child"


def peak_rss():
    # VmHWM is this process's own peak. ru_maxrss is not: Linux carries the peak of the process
    # that forked it (here pytest, with TensorFlow loaded) across fork and exec.
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


pickle_sandbox.BASE_TIMEOUT_S = 10.0
pickle_sandbox.BASE_OUTPUT_BYTES = 16 << 20
for mode in sys.argv[2:]:
    path = Path(sys.argv[1]) / mode / "reviews.pkl"
    path.parent.mkdir()
    path.write_text(mode)
    start = time.monotonic()
    try:
        pickle_sandbox.load(path, SANDBOX_JOBS["reviews"])
        message = None
    except InputError as error:
        message = str(error)
    peak = peak_rss()
    print(json.dumps({"mode": mode, "message": message, "seconds": time.monotonic() - start, "peak": peak}))
'''


def printable_line(text: str) -> bool:
    return all(" " <= ch <= "~" for ch in text)


@pytest.mark.slow
def test_a_compromised_child_gets_one_printable_error_and_bounded_parent_memory(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", COMPROMISED_RUNNER, str(tmp_path), *COMPROMISED_MODES],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["mode"] for r in records] == list(COMPROMISED_MODES)
    for record in records:
        message = record["message"]
        assert message is not None, record["mode"]
        assert "\n" not in message and printable_line(message), (record["mode"], message)
        assert re.search(COMPROMISED_MODES[record["mode"]], message), (record["mode"], message)
        assert record["seconds"] < 30, record
    # A 10 M-row compressed body, a 1 TiB body length and an endless stream did not reach the
    # parent's memory: its peak stays that of a process with pandas and pyarrow loaded.
    assert records[-1]["peak"] < 700 << 20, records


# RemapIds as `luigi` runs it, with the compromised child and the output cap off (1 TiB): the
# reply reader's address-space limit must hold on its own.
LUIGI_WITH_COMPROMISED_CHILD = r'''
import sys
from pipeline.untrusted import sandbox
sandbox._CHILD_MODULE = "tests.helpers.compromised_child"
sandbox.BASE_OUTPUT_BYTES = 1 << 40
from luigi.cmdline import luigi_run
luigi_run(sys.argv[1:])
'''


@pytest.mark.skipif(sys.version_info < (3, 8), reason="audit hooks need Python 3.8")
def test_a_reply_past_the_readers_memory_limit_is_one_error_and_the_tree_stays_small(tmp_path):
    # The child declares a 3 GiB record batch body and streams it: with no limit the reader would
    # allocate and fill 3 GiB; at its limit it stops, and the parent never maps anything.
    data_dir = tmp_path / "data"
    (data_dir / "raw").mkdir(parents=True)
    for name in ("reviews.pkl", "meta.pkl"):
        (data_dir / "raw" / name).write_text("big-body")
    audit_dir, scratch = tmp_path / "audit", tmp_path / "scratch"
    audit_dir.mkdir()
    scratch.mkdir()

    start = time.monotonic()
    result = run_remap(data_dir, audit_dir, [], ("-c", LUIGI_WITH_COMPROMISED_CHILD), TMPDIR=str(scratch))

    assert result.returncode == 30, result.stderr[-3000:]
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and printable_line(errors[0]), result.stderr[-3000:]
    assert re.search(r"raw/reviews\.pkl: reading its reply from the pickle sandbox needed more than the \d+ bytes of "
                     r"memory the reply reader may use \(its address-space limit\)", errors[0]), errors[0]
    assert "Traceback" not in result.stderr
    assert time.monotonic() - start < 60
    assert result.peak_bytes < 2 << 30, result.peak_bytes
    assert not (data_dir / "remap").exists() or not any((data_dir / "remap").rglob("*"))
    assert not list(scratch.glob("din-reply-*"))  # the scratch files are unnamed: nothing is ever left
