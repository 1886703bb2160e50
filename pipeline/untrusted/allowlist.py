"""The exact allow-list of what a data pickle may name, and how each name may be used.

This module owns the table behind `pipeline.untrusted.unpickler`:
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
    and pandas trusts block placements (those checks: `pipeline.untrusted.checks`).
Errors are `Refused` with a bounded description: nothing from the file is
`repr`'d beyond a few dozen characters.
"""
from __future__ import annotations

import _compat_pickle
import datetime
import functools
import importlib
import math
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
from pandas.util._decorators import cache_readonly

from pipeline.untrusted.checks import (
    BUFFERS,
    Refused,
    short,
    named,
    DTYPE_CODE,
    check_dtype,
    element_count,
    check_dtype_state,
    check_array_state,
    placement_positions,
    check_blocks,
    check_manager_state,
    check_backed_array,
    check_masked_array,
    arrow_state,
    check_arrow_array,
)


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
    ("collections", "OrderedDict"): "no_args",
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


# ---------------------------------------------------------------- BUILD


def check_build(inst: Any, state: Any) -> Any:
    """Check a BUILD before it runs; returns the state to apply."""
    if is_table_object(inst) or isinstance(inst, type):
        raise Refused(f"a change to the definition of {named(inst)}")
    if isinstance(inst, np.dtype):
        check_dtype_state(state)
    elif isinstance(inst, np.ndarray):
        check_array_state(inst, state)
    elif isinstance(inst, functools.partial):
        _check_partial_state(inst, state)
    elif type(inst).__name__ in ("BlockManager", "SingleBlockManager"):
        check_manager_state(state)
    elif isinstance(inst, _ARROW_ARRAYS):
        state = arrow_state(state)
    elif isinstance(inst, (np.generic, Block, pd.Index)):
        raise Refused(f"a BUILD on a {type(inst).__name__}")
    return _known_keys(inst, state)


# The keys pandas 1.x-3.x write in the dict state of each class that gets one. Any other
# key would become an attribute pandas trusts (a second array), so it is refused.
_FRAME_KEYS = {"_mgr", "_typ", "_metadata", "attrs", "_attrs", "_flags"}
_ARRAY_KEYS = {"_data", "_mask", "_dtype", "_readonly", "_pa_array", "_ndarray", "_codes", "_freq", "freq"}
_STATE_KEYS: dict[str, set[str]] = {
    "DataFrame": _FRAME_KEYS, "Series": _FRAME_KEYS | {"name", "_name"},
    "CategoricalDtype": {"categories", "ordered"}, "DatetimeTZDtype": {"tz", "unit"},
    "StringDtype": {"storage", "_na_value"}, "BooleanDtype": set(), "ArrowDtype": {"pyarrow_dtype", "_storage"},
    **{f"{kind}{bits}Dtype": set() for kind in ("Int", "UInt") for bits in (8, 16, 32, 64)},
    "Float32Dtype": set(), "Float64Dtype": set(),
    **{name: _ARRAY_KEYS for name in ("IntegerArray", "FloatingArray", "BooleanArray", "ArrowStringArray",
                                      "ArrowExtensionArray", "Categorical", "DatetimeArray", "TimedeltaArray",
                                      "StringArray")},
}

_STATE_VALUES: dict[str, Callable[[Any], bool]] = {
    "_readonly": lambda value: type(value) is bool,
    "_storage": lambda value: value == "pyarrow",
    "storage": lambda value: value in ("python", "pyarrow", "pyarrow_numpy"),
    "pyarrow_dtype": lambda value: isinstance(value, pa.DataType),
}


def _known_keys(inst: Any, state: Any) -> Any:
    """A dict (or (dict, slots)) state with only the keys pandas writes for this class; `_cache` checked, then dropped."""
    if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)) \
            and isinstance(state[1], dict):
        return (_known_keys(inst, state[0]) if state[0] else state[0], _known_keys(inst, state[1]))
    if not isinstance(state, dict):
        return state
    allowed = _STATE_KEYS.get(type(inst).__name__) if id(type(inst)) in _NEW else None
    if allowed is None:
        raise Refused(f"a BUILD state for a {type(inst).__name__}")
    unknown = [key for key in state if key not in allowed and key != "_cache"]
    if unknown:
        raise Refused(f"the attribute {short(unknown[0])} in the state of a {type(inst).__name__}")
    for key, fits in _STATE_VALUES.items():
        if key in state and not fits(state[key]):
            raise Refused(f"a {type(inst).__name__} with {key} = {short(state[key])}")
    if "_cache" not in state:
        return state
    _check_cache(type(inst), state["_cache"])
    return {key: value for key, value in state.items() if key != "_cache"}


# pandas 3 writes `_cache` into the state of every Arrow string array ({}) and of a masked
# array whose dtype was read ({"dtype": ..., "_can_hold_na": True}), so it cannot be refused
# outright. It may name only cached properties of the class (a forged `inferred_type` is
# refused), and is never applied: every cache is computed again from the values.
def _check_cache(cls: type, cache: Any) -> None:
    if not isinstance(cache, dict):
        raise Refused(f"a _cache of a {cls.__name__} that is {short(cache)}, not a dict")
    forged = [key for key in cache if key not in _cached_properties(cls)]
    if forged:
        raise Refused(f"the cached value {short(forged[0])} in the state of a {cls.__name__}, which is not a cached "
                      f"property of that class")


@functools.lru_cache(maxsize=None)
def _cached_properties(cls: type) -> frozenset:
    return frozenset(name for klass in cls.__mro__ for name, attribute in vars(klass).items()
                     if isinstance(attribute, cache_readonly))


def after_build(inst: Any) -> None:
    """Check the object a BUILD made, before anything uses it."""
    if isinstance(inst, np.dtype):
        check_dtype(inst, "numpy.dtype")
    elif isinstance(inst, NDArrayBacked):
        check_backed_array(inst)
    elif isinstance(inst, BaseMaskedArray):
        check_masked_array(inst)
    elif isinstance(inst, _ARROW_ARRAYS):
        check_arrow_array(inst)


# ---------------------------------------------------------------- NEWOBJ


def new_instance_allowed(cls: Any, args: Any) -> None:
    if id(cls) not in _NEW:
        raise Refused(f"a new {named(cls) if isinstance(cls, type) else short(cls)}")
    if args != ():
        raise Refused(f"a new {named(cls)} with arguments")


# ---------------------------------------------------------------- REDUCE


def _plain(func, args):
    return func(*args)


def _no_args(func, args):
    if args != ():
        raise Refused(f"{named(func)} with arguments")
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
    if not (isinstance(code, str) and DTYPE_CODE.match(code) and len(args) == 3
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
    count = element_count(shape, "numpy _frombuffer")
    size = memoryview(buffer).nbytes if isinstance(buffer, BUFFERS) else -1
    if dtype.hasobject or size != count * dtype.itemsize or order not in ("C", "F"):
        raise Refused("numpy _frombuffer whose buffer does not match its shape and dtype")
    return func(*args)


def _unpickle_block(func, args):
    if len(args) != 3 or args[2] not in (1, 2):
        raise Refused("a pandas block with unusual arguments")
    values, placement, ndim = args
    positions = placement_positions(placement, 1 << 62, "a pandas block")
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
    check_blocks(args[1], [(b.values, b.mgr_locs) for b in args[0]], "a pandas BlockManager")
    return func(*args)


def _ndarray_backed(func, args):
    if not (len(args) == 3 and id(args[0]) in _NEW and issubclass(args[0], NDArrayBacked)):
        raise Refused("a pandas array of a class outside the allow-list")
    array = func(*args)
    if args[2] is not None:  # otherwise a BUILD fills it, checked by after_build
        check_backed_array(array)
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
        raise Refused(f"{named(func)} of something other than integers")
    return func(*args)


def _timestamp(func, args):
    # _unpickle_timestamp(value, freq, tz[, reso]): a time zone only as an object, never a name
    # (a name like "dateutil/<path>" makes pandas open that file).
    if not (3 <= len(args) <= 4 and type(args[0]) is int and (args[1] is None or isinstance(args[1], str))
            and (args[2] is None or isinstance(args[2], datetime.tzinfo)) and all(type(a) is int for a in args[3:])):
        raise Refused(f"{named(func)} with unusual arguments")
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
    if not (len(args) == 1 and isinstance(args[0], BUFFERS)):
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
        raise Refused(f"{named(func)} of something other than a list")
    return func(*args)


def _bytearray(func, args):
    if args and not isinstance(args[0], (bytes, str)):  # bytearray(n) would allocate n bytes
        raise Refused(f"builtins.bytearray of {short(args[0])}")
    return func(*args)


def _datetime(func, args):
    if not (args and isinstance(args[0], (bytes, str))) or (
        len(args) == 2 and not isinstance(args[1], datetime.tzinfo)
    ):
        raise Refused(f"{named(func)} with unusual arguments")
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
        raise Refused(f"a call of {named(func) if callable(func) else short(func)}")
    if not isinstance(args, tuple):
        raise Refused(f"a call of {named(func)} without an argument tuple")
    return _VALIDATORS[kind](func, args)


__all__ = ["Refused", "lookup", "call", "new_instance_allowed", "check_build", "after_build", "short",
           "check_dtype", "is_table_object"]
