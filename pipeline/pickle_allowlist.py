"""The exact allow-list of what a data pickle may name, and how each name may be used.

This module owns the table behind `pipeline.safe_pickle`:
  * `lookup(module, name)`: the object a pickle names, from a fixed table of
    (module, name) pairs as written by pandas 1.x-3.x, numpy 1.x-2.x and
    pyarrow. Every object was resolved when this module was imported, so a
    name in a file never imports anything; a name outside the table is refused.
    No class is admitted for its base class: the table lists each one.
  * `call(func, args)`: the REDUCE opcode. Only table entries marked callable
    may be called, each through a validator of its arguments (a dtype code, a
    buffer of exactly the right length, in-range block placements, ...).
  * `new_instance_allowed(cls, args)`: the NEWOBJ opcode (an empty instance
    that a BUILD then fills).
  * `check_build(inst, state)` / `after_build(inst)`: the BUILD opcode. A
    BUILD on a table object itself (a class or function) is refused; dtype,
    ndarray, block manager and array states are checked before numpy/pandas
    see them, because numpy trusts the flags and offsets of a pickled dtype
    and pandas trusts block placements.
Errors are `Refused` with a bounded description: nothing from the file is
`repr`'d beyond a few dozen characters.
"""
from __future__ import annotations

import _compat_pickle
import datetime
import functools
import importlib
import math
import pickle
import re
import sys
import warnings
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.lib
from pandas._libs.arrays import NDArrayBacked
from pandas.compat import pickle_compat
from pandas.core.arrays.masked import BaseMaskedArray
from pandas.core.internals.blocks import Block

PANDAS_MAJOR = int(pd.__version__.split(".")[0])
MAX_ITEMSIZE = 1 << 20  # a dtype like U1000000000 would make one element take GBs
# Protocol 5 out-of-band buffers (Python 3.8+).
_BUFFERS = (bytes, bytearray) + ((pickle.PickleBuffer,) if hasattr(pickle, "PickleBuffer") else ())


class Refused(pickle.UnpicklingError):
    """A pickle asked for something outside the allow-list (the path is added by safe_load)."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def short(value: Any, limit: int = 40) -> str:
    """A bounded description of a value from a file: never a full repr of a container."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge int"
        return text if len(text) <= limit else text[: limit - 3] + "..."
    return f"a {type(value).__name__}"


def _named(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


# ---------------------------------------------------------------- the table
# Names as the supported writers spell them. Entries missing from the local
# pandas/numpy (a class added or moved in another version) are skipped or
# reached through pandas' own table of moved names.

# Classes that may be created empty (NEWOBJ) and filled by BUILD.
_NEW_CLASSES = [
    ("pandas", "DataFrame"), ("pandas.core.frame", "DataFrame"),
    ("pandas", "Series"), ("pandas.core.series", "Series"),
    ("pandas.core.internals.managers", "BlockManager"), ("pandas.core.internals.managers", "SingleBlockManager"),
    ("pandas", "Categorical"), ("pandas.core.arrays.categorical", "Categorical"),
    ("pandas", "CategoricalDtype"), ("pandas.core.dtypes.dtypes", "CategoricalDtype"),
    ("pandas", "DatetimeTZDtype"), ("pandas.core.dtypes.dtypes", "DatetimeTZDtype"),
    ("pandas", "StringDtype"), ("pandas.core.arrays.string_", "StringDtype"),
    ("pandas", "BooleanDtype"), ("pandas.core.arrays.boolean", "BooleanDtype"),
    ("pandas", "ArrowDtype"), ("pandas.core.dtypes.dtypes", "ArrowDtype"),
    ("pandas.arrays", "StringArray"), ("pandas.core.arrays.string_", "StringArray"),
    ("pandas.arrays", "ArrowStringArray"), ("pandas.core.arrays.string_arrow", "ArrowStringArray"),
    ("pandas.arrays", "ArrowExtensionArray"), ("pandas.core.arrays.arrow.array", "ArrowExtensionArray"),
    ("pandas.arrays", "BooleanArray"), ("pandas.core.arrays.boolean", "BooleanArray"),
    ("pandas.arrays", "IntegerArray"), ("pandas.core.arrays.integer", "IntegerArray"),
    ("pandas.arrays", "FloatingArray"), ("pandas.core.arrays.floating", "FloatingArray"),
    ("pandas.arrays", "DatetimeArray"), ("pandas.core.arrays.datetimes", "DatetimeArray"),
    ("pandas.arrays", "TimedeltaArray"), ("pandas.core.arrays.timedeltas", "TimedeltaArray"),
] + [
    (module, f"{kind}{bits}Dtype")
    for kind, sizes in (("Int", (8, 16, 32, 64)), ("UInt", (8, 16, 32, 64)), ("Float", (32, 64)))
    for bits in sizes
    for module in ("pandas", "pandas.core.arrays.integer" if "Int" in kind else "pandas.core.arrays.floating")
]

# Index classes: only ever passed to _new_Index / _new_DatetimeIndex, never called.
_INDEX_CLASSES = [
    ("pandas", "Index"), ("pandas.core.indexes.base", "Index"),
    ("pandas", "RangeIndex"), ("pandas.core.indexes.range", "RangeIndex"),
    ("pandas", "MultiIndex"), ("pandas.core.indexes.multi", "MultiIndex"),
    ("pandas", "DatetimeIndex"), ("pandas.core.indexes.datetimes", "DatetimeIndex"),
    ("pandas", "CategoricalIndex"), ("pandas.core.indexes.category", "CategoricalIndex"),
    ("pandas.core.indexes.numeric", "Int64Index"), ("pandas.core.indexes.numeric", "UInt64Index"),
    ("pandas.core.indexes.numeric", "Float64Index"),
]

# Singletons used as values, and ndarray (only ever an argument of _reconstruct).
_VALUES = [
    ("numpy", "ndarray"),
    ("pandas._libs.missing", "NA"), ("pandas", "NA"),
    ("pandas._libs.tslibs.nattype", "NaT"), ("pandas", "NaT"),
]

# Callables (REDUCE), each with a validator below; key -> validator name.
_CALLABLES = {
    ("copyreg", "_reconstructor"): "reconstructor",
    ("_codecs", "encode"): "latin1_encode",
    ("numpy", "dtype"): "numpy_dtype",
    ("numpy.core.multiarray", "_reconstruct"): "ndarray_reconstruct",
    ("numpy.core.multiarray", "scalar"): "numpy_scalar",
    ("numpy.core.numeric", "_frombuffer"): "numpy_frombuffer",
    ("pandas._libs.internals", "_unpickle_block"): "unpickle_block",
    ("pandas.core.internals.blocks", "new_block"): "unpickle_block",
    ("pandas.core.internals.managers", "BlockManager"): "block_manager",
    ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"): "ndarray_backed",
    ("pandas.core.indexes.base", "_new_Index"): "new_index",
    ("pandas.core.indexes.datetimes", "_new_DatetimeIndex"): "new_index",
    ("pandas._libs.tslibs.timestamps", "_unpickle_timestamp"): "timestamp",
    ("pandas._libs.tslibs.timestamps", "Timestamp"): "old_timestamp",
    ("pandas", "Timestamp"): "old_timestamp",
    ("pandas", "Timedelta"): "ints",
    ("pandas._libs.tslibs.timedeltas", "_timedelta_unpickle"): "ints",
    ("pandas._libs.tslibs.timedeltas", "Timedelta"): "ints",
    ("pandas._libs.tslibs.nattype", "_nat_unpickle"): "no_args",
    ("pandas._libs.tslibs.nattype", "__nat_unpickle"): "no_args",
    ("pandas", "StringDtype"): "string_dtype",
    ("pandas.core.arrays.string_", "StringDtype"): "string_dtype",
    ("pandas", "ArrowDtype"): "arrow_dtype",
    ("pandas.core.dtypes.dtypes", "ArrowDtype"): "arrow_dtype",
    ("pyarrow.lib", "_restore_array"): "arrow_array",
    ("pyarrow.lib", "py_buffer"): "arrow_buffer",
    ("pyarrow.lib", "type_for_alias"): "plain",
    ("pyarrow.lib", "field"): "plain",
    ("pyarrow.lib", "schema"): "plain",
    ("pyarrow.lib", "list_"): "plain",
    ("pyarrow.lib", "large_list"): "plain",
    ("pyarrow.lib", "struct"): "plain",
    ("pyarrow.lib", "dictionary"): "plain",
    ("pyarrow.lib", "timestamp"): "arrow_timestamp",
    ("pyarrow.lib", "chunked_array"): "plain",
    ("builtins", "set"): "collection", ("builtins", "frozenset"): "collection", ("builtins", "slice"): "plain",
    ("builtins", "complex"): "plain", ("builtins", "range"): "plain", ("builtins", "bytearray"): "bytearray",
    ("builtins", "object"): "no_args",
    ("collections", "OrderedDict"): "plain",
    ("datetime", "date"): "plain", ("datetime", "datetime"): "datetime", ("datetime", "time"): "datetime",
    ("datetime", "timedelta"): "plain", ("datetime", "timezone"): "plain",
    ("pytz", "_UTC"): "no_args",
    ("functools", "partial"): "partial",
}

# Modules the table names; importing them here (not on a pickle's say) is the only import.
_PRELOAD = (
    "pandas.core.frame", "pandas.core.series", "pandas.core.internals.managers", "pandas.core.arrays.categorical",
    "pandas.core.dtypes.dtypes", "pandas.core.arrays.string_", "pandas.core.arrays.boolean",
    "pandas.core.arrays.string_arrow", "pandas.core.arrays.arrow.array", "pandas.core.arrays.integer",
    "pandas.core.arrays.floating", "pandas.core.arrays.datetimes", "pandas.core.arrays.timedeltas",
    "pandas.core.indexes.base", "pandas.core.indexes.range", "pandas.core.indexes.multi",
    "pandas.core.indexes.datetimes", "pandas.core.indexes.category", "pandas.core.indexes.numeric",
    "pandas.core.internals.blocks", "pandas._libs.internals", "pandas._libs.arrays", "pandas._libs.missing",
    "pandas._libs.tslibs.nattype", "pandas._libs.tslibs.timestamps", "pandas._libs.tslibs.timedeltas",
    "pandas.arrays", "pytz", "functools",
)

_NUMPY_CORE = "numpy._core" if hasattr(np, "_core") else "numpy.core"


def _local_name(module: str, name: str) -> tuple[str, str]:
    """Map a name as some writer spelled it to the local spelling (no imports)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    for core in ("numpy.core", "numpy._core"):  # numpy 2 renamed numpy.core to numpy._core
        if module == core or module.startswith(core + "."):
            module = "numpy.core" + module[len(core):]
    return module, name


def _resolve_local(module: str, name: str) -> Any:
    """Find an entry of the table in this environment (import time only); None if absent here."""
    moved = getattr(pickle_compat, "_class_locations_map", {})
    candidates = [(module, name), moved.get((module, name), (module, name))]
    for cand_module, cand_name in candidates:
        if cand_module.startswith("numpy.core"):
            cand_module = _NUMPY_CORE + cand_module[len("numpy.core"):]
        found = sys.modules.get(cand_module)
        if found is not None and hasattr(found, cand_name):
            return getattr(found, cand_name)
    return None


def _preload() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Warning)
        for module in _PRELOAD + (_NUMPY_CORE + ".multiarray", _NUMPY_CORE + ".numeric"):
            try:
                importlib.import_module(module)
            except ImportError:  # a module of another pandas version, or pytz absent
                pass


_preload()
_TABLE: dict[tuple[str, str], Any] = {}
_NEW: set[int] = set()
_INDEX: set[int] = set()
_CALL_KIND: dict[int, str] = {}
_TABLE_IDS: set[int] = set()


def _register(entries, role: set[int] | None) -> None:
    for module, name in entries:
        found = _resolve_local(*_local_name(module, name))
        if found is not None:
            _TABLE[_local_name(module, name)] = found
            _TABLE_IDS.add(id(found))
            if role is not None:
                role.add(id(found))


_register(_NEW_CLASSES, _NEW)
_register(_INDEX_CLASSES, _INDEX)
_register(_VALUES, None)
for _key, _kind in _CALLABLES.items():
    _found = _resolve_local(*_local_name(*_key))
    if _found is None and _kind == "unpickle_block":
        _found = _resolve_local("pandas.core.internals.blocks", "new_block")
    if _found is not None:
        _TABLE[_local_name(*_key)] = _found
        _TABLE_IDS.add(id(_found))
        _CALL_KIND.setdefault(id(_found), _kind)

_ARROW_ARRAYS = tuple(
    found for (module, name), found in _TABLE.items() if name in ("ArrowStringArray", "ArrowExtensionArray")
)
_MULTI_INDEX = pd.MultiIndex


def lookup(module: str, name: str) -> Any:
    """The object a pickle names, or Refused. Nothing is imported here."""
    key = _local_name(module, name)
    moved = getattr(pickle_compat, "_class_locations_map", {})
    found = _TABLE.get(key)
    if found is None:
        found = _TABLE.get(_local_name(*moved.get(key, key)))
    if found is None:
        what = f"{key[0]}.{key[1]}"
        if key[0] in ("posix", "nt"):  # how os.system and friends are pickled
            what += f" (os.{key[1]})"
        raise Refused(what)
    return found


def is_table_object(obj: Any) -> bool:
    return id(obj) in _TABLE_IDS


# ---------------------------------------------------------------- numpy checks

_DTYPE_CODE = re.compile(r"[<>|=]?[biufcmMOSU?][0-9]{0,7}\Z")


def check_dtype(dtype: Any, where: str) -> np.dtype:
    """A dtype equal in every field numpy trusts to the one its type code names."""
    if not isinstance(dtype, np.dtype):
        raise Refused(f"{where} with {short(dtype)} as its dtype")
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biufcmMOSU":
        raise Refused(f"{where} with a structured or void dtype")
    canonical = np.dtype(dtype.str)
    if (dtype.itemsize, dtype.alignment, dtype.flags, dtype.hasobject) != (
        canonical.itemsize, canonical.alignment, canonical.flags, canonical.hasobject
    ) or dtype.itemsize > MAX_ITEMSIZE:
        raise Refused(f"{where} with a dtype whose flags or sizes were altered")
    return dtype


def _count(shape: Any, where: str) -> int:
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise Refused(f"{where} with shape {short(shape)}")
    count = 1
    for n in shape:
        count *= n
    return count


def _check_state_dtype(state: Any) -> None:
    if not (isinstance(state, tuple) and len(state) in (8, 9) and all(part is None for part in state[2:5])):
        raise Refused("numpy.dtype state with subarrays, fields or an unknown layout")


def _check_array_state(array: np.ndarray, state: Any) -> None:
    if type(array) is not np.ndarray or not (isinstance(state, tuple) and len(state) == 5):
        raise Refused("numpy.ndarray state of an unknown layout")
    _version, shape, dtype, _fortran, data = state
    count = _count(shape, "numpy.ndarray")
    dtype = check_dtype(dtype, "numpy.ndarray")
    if dtype.hasobject:
        if not (isinstance(data, list) and len(data) == count):
            raise Refused("an object numpy.ndarray whose items do not match its shape")
    elif not (isinstance(data, (bytes, bytearray, str)) and len(data) == count * dtype.itemsize):
        raise Refused("a numpy.ndarray whose data does not match its shape and dtype")


# ---------------------------------------------------------------- pandas checks


def _placement(locs: Any, n_items: int, where: str) -> np.ndarray:
    """The item positions a block claims, all inside 0..n_items-1."""
    if hasattr(locs, "indexer"):  # a BlockPlacement
        locs = locs.indexer
    if isinstance(locs, slice):
        parts = (locs.start or 0, locs.stop, 1 if locs.step is None else locs.step)
        if not all(type(p) is int for p in parts) or parts[2] <= 0:
            raise Refused(f"{where} with placement {short(locs)}")
        positions = range(*parts)  # pandas may end a stepped slice past the last column
        if len(positions) and (positions[0] < 0 or positions[-1] >= n_items):
            raise Refused(f"{where} placed outside the {n_items} columns")
        return np.arange(*parts)
    if not (type(locs) is np.ndarray and locs.ndim == 1 and locs.dtype.kind in "iu"):
        raise Refused(f"{where} with placement {short(locs)}")
    if len(locs) and (locs.min() < 0 or locs.max() >= n_items):
        raise Refused(f"{where} placed outside the {n_items} columns")
    return locs.astype(np.int64)


def _check_blocks(axes: Any, blocks: list[tuple[Any, Any]], where: str) -> None:
    """Every block inside the axes, with the right shape, each column covered once."""
    if not (isinstance(axes, (list, tuple)) and len(axes) in (1, 2) and all(isinstance(a, pd.Index) for a in axes)):
        raise Refused(f"{where} with axes that are not 1 or 2 pandas Indexes")
    n_items, n_rows = len(axes[0]), len(axes[-1])
    covered = np.zeros(n_items, dtype=np.int64)
    for values, locs in blocks:
        positions = _placement(locs, n_items, where)
        shape = getattr(values, "shape", None)
        if not isinstance(values, (np.ndarray, pd.api.extensions.ExtensionArray)) or shape is None:
            raise Refused(f"{where} with block values {short(values)}")
        rows_ok = shape[-1] == n_rows if len(axes) == 2 else shape[0] == n_items
        items_ok = (shape[0] if len(shape) == 2 else 1) == len(positions) or len(axes) == 1
        if not (rows_ok and items_ok):
            raise Refused(f"{where} with a block whose shape does not match its placement")
        np.add.at(covered, positions, 1)
    if len(axes) == 2 and not (covered == 1).all():
        raise Refused(f"{where} whose blocks do not cover each column exactly once")


def _check_manager_state(state: Any) -> None:
    try:
        inner = state[3]["0.14.1"]
        axes, blocks = inner["axes"], [(b["values"], b["mgr_locs"]) for b in inner["blocks"]]
    except (TypeError, KeyError, IndexError):
        raise Refused("a pandas BlockManager state of an unknown layout") from None
    _check_blocks(axes, blocks, "a pandas BlockManager")


def _check_backed(array: Any) -> None:
    """NDArrayBacked arrays: the ndarray inside must fit the pandas dtype outside."""
    data = getattr(array, "_ndarray", None)
    if type(data) is not np.ndarray:
        raise Refused(f"a {type(array).__name__} without an ndarray inside")
    check_dtype(data.dtype, type(array).__name__)
    if isinstance(array, pd.Categorical):
        if data.dtype.kind not in "iu" or (len(data) and (data.min() < -1 or data.max() >= len(array.categories))):
            raise Refused("a pandas Categorical with codes outside its categories")
    elif isinstance(array, (pd.arrays.DatetimeArray, pd.arrays.TimedeltaArray)):
        if data.dtype.kind not in "Mm" or data.dtype.itemsize != 8:
            raise Refused(f"a {type(array).__name__} over a {data.dtype} ndarray")
    elif isinstance(array, pd.arrays.StringArray):
        if not data.dtype.hasobject:
            raise Refused("a pandas StringArray over a non-object ndarray")
    else:
        raise Refused(f"a {_named(type(array))} array")


def _check_masked(array: Any) -> None:
    data, mask = getattr(array, "_data", None), getattr(array, "_mask", None)
    if not (type(data) is np.ndarray and type(mask) is np.ndarray and mask.dtype == np.bool_
            and data.shape == mask.shape and check_dtype(data.dtype, type(array).__name__).kind in "biuf"):
        raise Refused(f"a {type(array).__name__} whose data and mask do not match")


_ARROW_DATA = "_pa_array" if PANDAS_MAJOR >= 2 else "_data"


def _arrow_state(state: Any) -> Any:
    # pandas 2+ keeps the chunked array in _pa_array, pandas 1.x in _data.
    if isinstance(state, dict):
        other = "_data" if _ARROW_DATA == "_pa_array" else "_pa_array"
        if other in state and _ARROW_DATA not in state:
            state = dict(state)
            state[_ARROW_DATA] = state.pop(other)
        data = state.get(_ARROW_DATA)
        if PANDAS_MAJOR < 2 and isinstance(data, pa.Array):  # pandas 2.x wrote one large_string array
            state = dict(state)
            state[_ARROW_DATA] = pa.chunked_array([data.cast(pa.string()) if data.type == pa.large_string() else data])
    return state


def _check_arrow_array(array: Any) -> None:
    data = getattr(array, _ARROW_DATA, None)
    if not isinstance(data, pa.ChunkedArray):
        raise Refused(f"a {type(array).__name__} without a pyarrow ChunkedArray inside")
    dtype = getattr(array, "_dtype", None) or getattr(array, "dtype", None)
    expected = getattr(dtype, "pyarrow_dtype", None)
    if expected is not None and data.type != expected:
        raise Refused(f"a {type(array).__name__} whose data type differs from its dtype")


# ---------------------------------------------------------------- BUILD


def check_build(inst: Any, state: Any) -> Any:
    """Check a BUILD before it runs; returns the state to apply."""
    if is_table_object(inst) or isinstance(inst, type):
        raise Refused(f"a change to the definition of {_named(inst)}")
    if isinstance(inst, np.dtype):
        _check_state_dtype(state)
    elif isinstance(inst, np.ndarray):
        _check_array_state(inst, state)
    elif isinstance(inst, functools.partial):
        _check_partial_state(inst, state)
    elif type(inst).__name__ in ("BlockManager", "SingleBlockManager"):
        _check_manager_state(state)
    elif isinstance(inst, _ARROW_ARRAYS):
        state = _arrow_state(state)
    elif isinstance(inst, (np.generic, Block)):
        raise Refused(f"a BUILD on a {type(inst).__name__}")
    return state


def after_build(inst: Any) -> None:
    """Check the object a BUILD made, before anything uses it."""
    if isinstance(inst, np.dtype):
        check_dtype(inst, "numpy.dtype")
    elif isinstance(inst, NDArrayBacked):
        _check_backed(inst)
    elif isinstance(inst, BaseMaskedArray):
        _check_masked(inst)
    elif isinstance(inst, _ARROW_ARRAYS):
        _check_arrow_array(inst)


# ---------------------------------------------------------------- NEWOBJ


def new_instance_allowed(cls: Any, args: Any) -> None:
    if id(cls) not in _NEW:
        raise Refused(f"a new {_named(cls) if isinstance(cls, type) else short(cls)}")
    if args != ():
        raise Refused(f"a new {_named(cls)} with arguments")


# ---------------------------------------------------------------- REDUCE


def _plain(func, args):
    return func(*args)


def _no_args(func, args):
    if args != ():
        raise Refused(f"{_named(func)} with arguments")
    return func()


def _reconstructor(func, args):
    # copyreg._reconstructor(cls, base, state): only an empty instance of a table class.
    if not (len(args) == 3 and args[1] is object and args[2] is None and id(args[0]) in _NEW):
        raise Refused("copyreg._reconstructor of something other than an allowed class")
    return func(*args)


def _latin1_encode(func, args):
    # Protocol 2 stores bytes as _codecs.encode(text, "latin1"); no other codec is looked up.
    if not (len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], str)
            and args[1].lower().replace("_", "-") in ("latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1")):
        raise Refused(f"_codecs.encode with encoding {short(args[1] if len(args) > 1 else None)}")
    return args[0].encode("latin1")


def _numpy_dtype(func, args):
    code = args[0] if args else None
    if isinstance(code, bytes):  # Python 2 pickles
        code = code.decode("latin1")
    if not (isinstance(code, str) and _DTYPE_CODE.match(code) and len(args) == 3
            and args[1] in (0, False) and args[2] in (1, True)):
        raise Refused(f"numpy.dtype {short(code)}")
    return check_dtype(np.dtype(code, False, True), "numpy.dtype")


def _ndarray_reconstruct(func, args):
    if not (len(args) == 3 and args[0] is np.ndarray and args[1] == (0,) and args[2] in (b"b", "b")):
        raise Refused("numpy _reconstruct of something other than an empty ndarray")
    return func(*args)


def _numpy_scalar(func, args):
    if len(args) not in (1, 2):
        raise Refused("numpy scalar with unusual arguments")
    dtype = check_dtype(args[0], "numpy scalar")
    if not dtype.hasobject:
        raw = args[1] if len(args) == 2 else None
        if not (isinstance(raw, (bytes, str)) and len(raw) == dtype.itemsize):
            raise Refused("a numpy scalar whose bytes do not match its dtype")
    return func(*args)


def _numpy_frombuffer(func, args):
    if len(args) != 4:
        raise Refused("numpy _frombuffer with unusual arguments")
    buffer, dtype, shape, order = args
    dtype = check_dtype(dtype, "numpy _frombuffer")
    count = _count(shape, "numpy _frombuffer")
    size = memoryview(buffer).nbytes if isinstance(buffer, _BUFFERS) else -1
    if dtype.hasobject or size != count * dtype.itemsize or order not in ("C", "F"):
        raise Refused("numpy _frombuffer whose buffer does not match its shape and dtype")
    return func(*args)


def _unpickle_block(func, args):
    if len(args) != 3 or args[2] not in (1, 2):
        raise Refused("a pandas block with unusual arguments")
    values, placement, ndim = args
    positions = _placement(placement, 1 << 62, "a pandas block")
    if not isinstance(values, (np.ndarray, pd.api.extensions.ExtensionArray)):
        raise Refused(f"a pandas block of {short(values)}")
    if isinstance(values, np.ndarray):
        check_dtype(values.dtype, "a pandas block")
    if ndim == 2 and (values.shape[0] if values.ndim == 2 else 1) != len(positions):
        raise Refused("a pandas block whose shape does not match its placement")
    if func.__name__ == "new_block":  # pandas >= 1.4 types it as a BlockPlacement
        placement = pd._libs.internals.BlockPlacement(placement)
    return func(values, placement, ndim=ndim) if func.__name__ == "new_block" else func(values, placement, ndim)


def _block_manager(func, args):
    if len(args) < 2 or not isinstance(args[0], (tuple, list)) or not all(isinstance(b, Block) for b in args[0]):
        raise Refused("a pandas BlockManager of something other than blocks")
    _check_blocks(args[1], [(b.values, b.mgr_locs) for b in args[0]], "a pandas BlockManager")
    return func(*args)


def _ndarray_backed(func, args):
    if not (len(args) == 3 and id(args[0]) in _NEW and issubclass(args[0], NDArrayBacked)):
        raise Refused("a pandas array of a class outside the allow-list")
    array = func(*args)
    if args[2] is not None:  # otherwise a BUILD fills it, checked by after_build
        _check_backed(array)
    return array


def _new_index(func, args):
    if not (len(args) == 2 and id(args[0]) in _INDEX and isinstance(args[1], dict)):
        raise Refused("a pandas Index of a class outside the allow-list")
    index = func(*args)
    if isinstance(index, _MULTI_INDEX):
        index._verify_integrity()  # pandas skips this check when unpickling
    return index


def _ints(func, args):
    if not (args and all(type(arg) is int or isinstance(arg, np.integer) for arg in args)):
        raise Refused(f"{_named(func)} of something other than integers")
    return func(*args)


def _timestamp(func, args):
    # _unpickle_timestamp(value, freq, tz[, reso]): a time zone only as an object, never a name
    # (a name like "dateutil/<path>" makes pandas open that file).
    if not (3 <= len(args) <= 4 and type(args[0]) is int and (args[1] is None or isinstance(args[1], str))
            and (args[2] is None or isinstance(args[2], datetime.tzinfo)) and all(type(a) is int for a in args[3:])):
        raise Refused(f"{_named(func)} with unusual arguments")
    return func(*args)


def _old_timestamp(func, args):
    # pandas <= 1.2 wrote Timestamp(value, freq, tz); newer pandas has no freq.
    if not (len(args) == 3 and type(args[0]) is int and (args[1] is None or isinstance(args[1], str))
            and (args[2] is None or isinstance(args[2], datetime.tzinfo))):
        raise Refused("a pandas Timestamp with unusual arguments")
    return func(args[0]) if args[2] is None else func(args[0], tz=args[2])


def _string_dtype(func, args):
    if not (1 <= len(args) <= 2 and args[0] in ("python", "pyarrow", "pyarrow_numpy")):
        raise Refused("a pandas StringDtype with unusual arguments")
    if len(args) == 2 and not (args[1] is pd.NA or (isinstance(args[1], float) and math.isnan(args[1]))):
        raise Refused("a pandas StringDtype with an unusual missing value")
    try:
        return func(*args)
    except TypeError:  # pandas 1.x: StringDtype(storage) only
        return func("pyarrow" if args[0] == "pyarrow_numpy" else args[0])


def _arrow_dtype(func, args):
    if not (len(args) == 1 and isinstance(args[0], pa.DataType)):
        raise Refused("a pandas ArrowDtype of something other than a pyarrow type")
    return func(*args)


def _arrow_array(func, args):
    # Arrow trusts the buffers it is given; a full validation keeps a crafted
    # offset or length from reading outside them later.
    array = func(*args)
    array.validate(full=True)
    return array


def _arrow_buffer(func, args):
    if not (len(args) == 1 and isinstance(args[0], _BUFFERS)):
        raise Refused("a pyarrow buffer of something other than bytes")
    return func(*args)


_FIXED_ZONE = re.compile(r"(UTC|[+-][0-9]{2}:[0-9]{2})\Z")


def _arrow_timestamp(func, args):
    # A zone name would be looked up in tz databases on conversion: only UTC and fixed offsets.
    if not (1 <= len(args) <= 2 and isinstance(args[0], str)
            and (len(args) == 1 or args[1] is None or (isinstance(args[1], str) and _FIXED_ZONE.match(args[1])))):
        raise Refused("a pyarrow timestamp type with unusual arguments")
    return func(*args)


def _collection(func, args):
    # set(range(10**12)) would fill memory: only the list that pickle writes.
    if not (len(args) <= 1 and all(isinstance(arg, (list, tuple)) for arg in args)):
        raise Refused(f"{_named(func)} of something other than a list")
    return func(*args)


def _bytearray(func, args):
    if args and not isinstance(args[0], (bytes, str)):  # bytearray(n) would allocate n bytes
        raise Refused(f"builtins.bytearray of {short(args[0])}")
    return func(*args)


def _datetime(func, args):
    if not (args and isinstance(args[0], (bytes, str))) or (
        len(args) == 2 and not isinstance(args[1], datetime.tzinfo)
    ):
        raise Refused(f"{_named(func)} with unusual arguments")
    return func(*args)


def _partial(func, args):
    # pandas 1.3 pickles blocks as functools.partial(new_block, ndim=N)(values, placement):
    # only that partial, filled by a BUILD checked in check_build.
    if not (len(args) == 1 and _CALL_KIND.get(id(args[0])) == "unpickle_block"):
        raise Refused("functools.partial of something other than a pandas block constructor")
    return func(*args)


def _check_partial_state(partial: functools.partial, state: Any) -> None:
    if not (isinstance(state, tuple) and len(state) == 4 and state[0] is partial.func and state[1] == ()
            and isinstance(state[2], dict) and set(state[2]) == {"ndim"} and state[3] in (None, {})):
        raise Refused("functools.partial state other than ndim= for a pandas block constructor")


_VALIDATORS: dict[str, Callable[[Any, tuple], Any]] = {
    "plain": _plain, "no_args": _no_args, "reconstructor": _reconstructor, "latin1_encode": _latin1_encode,
    "numpy_dtype": _numpy_dtype, "ndarray_reconstruct": _ndarray_reconstruct, "numpy_scalar": _numpy_scalar,
    "numpy_frombuffer": _numpy_frombuffer, "unpickle_block": _unpickle_block, "block_manager": _block_manager,
    "ndarray_backed": _ndarray_backed, "new_index": _new_index, "ints": _ints, "timestamp": _timestamp,
    "old_timestamp": _old_timestamp, "string_dtype": _string_dtype, "arrow_dtype": _arrow_dtype,
    "arrow_array": _arrow_array, "arrow_buffer": _arrow_buffer, "arrow_timestamp": _arrow_timestamp,
    "bytearray": _bytearray, "datetime": _datetime, "partial": _partial, "collection": _collection,
}


def call(func: Any, args: Any) -> Any:
    """REDUCE: call `func(*args)` if the table allows it, through its validator."""
    if (isinstance(func, functools.partial) and isinstance(args, tuple) and not func.args
            and set(func.keywords or ()) == {"ndim"}):
        func, args = func.func, args + (func.keywords["ndim"],)
    kind = _CALL_KIND.get(id(func))
    if kind is None:
        raise Refused(f"a call of {_named(func) if callable(func) else short(func)}")
    if not isinstance(args, tuple):
        raise Refused(f"a call of {_named(func)} without an argument tuple")
    return _VALIDATORS[kind](func, args)


__all__ = ["Refused", "lookup", "call", "new_instance_allowed", "check_build", "after_build", "short",
           "check_dtype", "is_table_object"]
