"""Loading user pickles without letting them run code.

This module owns the one way the pipeline opens a pickle file. A pickle names
the callables that rebuild its objects, and a plain `pickle.load` imports and
calls whatever is named (`os.system`, `builtins.eval`, ...). `safe_load` admits
only the reconstructors of pandas/numpy/pyarrow data and refuses every other
name before anything is imported or called.

The allow-list, in `_resolve`:
  * `_ALLOWED_FUNCTIONS`: an explicit set of (module, name) reconstructor
    functions and singletons (numpy `_reconstruct`, pandas `_unpickle_block`,
    pyarrow `_restore_array`, `pandas.NA`, ...).
  * classes (`isinstance(obj, type)`) under a few package roots, each root with
    a predicate on the class itself (`_CLASS_RULES`): builtins containers by
    name, numpy arrays/dtypes/scalars, pandas frames/indexes/arrays/dtypes/
    blocks and scalars, datetime types. The class is checked, not the module it
    was named from, because `pandas` re-exports file-opening classes such as
    `HDFStore` next to `DataFrame`.
Names are first routed through the py2 -> py3 renames, numpy's `core` ->
`_core` rename and pandas' own table of moved classes
(`pandas.compat.pickle_compat._class_locations_map`).

Like `pandas.read_pickle`, the fast C unpickler runs first and, if an old-pandas
reconstructor trips it, the file is re-read with pandas' compatibility
unpickler, subclassed with the same allow-list. `_DefinitionGuard` undoes and
refuses attribute changes a pickle makes to the allowed classes themselves.
Not covered: resource exhaustion (a pickle may ask for a huge array).
"""
from __future__ import annotations

import _compat_pickle
import collections
import datetime
import gzip
import importlib
import io
import os
import pickle
import types
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.lib
from pandas._libs import internals as libinternals
from pandas._libs.arrays import NDArrayBacked
from pandas._libs.interval import Interval
from pandas._libs.sparse import SparseIndex
from pandas._libs.tslibs import BaseOffset, Period
from pandas.api.extensions import ExtensionArray, ExtensionDtype
from pandas.compat import pickle_compat
from pandas.core.generic import NDFrame
from pandas.core.indexes.frozen import FrozenList
from pandas.core.internals.managers import BaseBlockManager

from din_common.errors import InputError

DEFAULT_EXPECTED = "a pandas DataFrame written by DataFrame.to_pickle"

# Errors pandas.read_pickle answers by retrying with its compatibility unpickler.
_COMPAT_RETRY_ERRORS = (AttributeError, ImportError, TypeError, ValueError)

# What a damaged or foreign file makes an unpickler raise (besides our refusal).
_CORRUPT_PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    AttributeError,
    ImportError,
    TypeError,
    ValueError,
    IndexError,
    KeyError,
    OverflowError,
    RecursionError,
    UnicodeDecodeError,
    pa.ArrowException,
)


class _Refused(pickle.UnpicklingError):
    """A pickle named something outside the allow-list (path added by safe_load)."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


_LATIN1_NAMES = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "iso8859_1", "l1"})


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Protocol 2 stores bytes as _codecs.encode(text, "latin1"). Other codec
    # names are not needed by data, and are not even looked up (that imports).
    if not (isinstance(text, str) and isinstance(encoding, str) and encoding.lower() in _LATIN1_NAMES):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _restore_validated_array(state: Any) -> pa.Array:
    # Arrow trusts the buffers it is given; a full validation keeps a crafted
    # offset or length from reading outside them later.
    array = pyarrow.lib._restore_array(state)
    array.validate(full=True)
    return array


# (module, name) -> replacement callable, for reconstructors we narrow.
_SUBSTITUTES: dict[tuple[str, str], Callable] = {
    ("_codecs", "encode"): _latin1_encode,
    ("pyarrow.lib", "_restore_array"): _restore_validated_array,
}

# Reconstructor functions and singletons that data pickles name. Keys use the
# current module names (after the renames in _canonical_name).
_ALLOWED_FUNCTIONS = frozenset(
    {
        ("copyreg", "_reconstructor"),
        ("_codecs", "encode"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("pandas._libs.internals", "_unpickle_block"),
        ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
        ("pandas._libs.tslibs.timestamps", "_unpickle_timestamp"),
        ("pandas._libs.tslibs.timedeltas", "_timedelta_unpickle"),
        ("pandas._libs.tslibs.nattype", "_nat_unpickle"),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas.core.indexes.datetimes", "_new_DatetimeIndex"),
        ("pandas.core.indexes.timedeltas", "_new_TimedeltaIndex"),
        ("pandas.core.indexes.interval", "_new_IntervalIndex"),
        ("pandas._libs.missing", "NA"),
        ("pandas", "NA"),
        ("pandas._libs.tslibs.nattype", "NaT"),
        ("pandas", "NaT"),
        ("pyarrow.lib", "_restore_array"),
        ("pyarrow.lib", "py_buffer"),
        ("pyarrow.lib", "type_for_alias"),
        ("pyarrow.lib", "field"),
        ("pyarrow.lib", "schema"),
        ("pyarrow.lib", "list_"),
        ("pyarrow.lib", "large_list"),
        ("pyarrow.lib", "struct"),
        ("pyarrow.lib", "dictionary"),
        ("pyarrow.lib", "timestamp"),
        ("pyarrow.lib", "chunked_array"),
    }
)

_BUILTIN_CLASSES = frozenset(
    {list, dict, tuple, set, frozenset, bytearray, bytes, slice, complex, object, str, int, float, bool, range}
)
_DATETIME_CLASSES = frozenset(
    {datetime.date, datetime.datetime, datetime.time, datetime.timedelta, datetime.timezone, datetime.tzinfo}
)
_PANDAS_DATA_BASES = (
    NDFrame,
    pd.Index,
    ExtensionArray,
    ExtensionDtype,
    NDArrayBacked,
    BaseBlockManager,
    libinternals.BlockManager,
    libinternals.Block,
    libinternals.BlockPlacement,
    FrozenList,
    BaseOffset,
    Period,
    Interval,
    SparseIndex,
    datetime.date,  # Timestamp, NaT
    datetime.timedelta,  # Timedelta
    datetime.tzinfo,
)


def _is_numpy_data_class(cls: type) -> bool:
    # Exactly ndarray: subclasses such as np.memmap open files when constructed.
    return cls is np.ndarray or issubclass(cls, (np.dtype, np.generic))


# Package root -> predicate on the class found there.
_CLASS_RULES: dict[str, Callable[[type], bool]] = {
    "builtins": lambda cls: cls in _BUILTIN_CLASSES,
    "collections": lambda cls: cls is collections.OrderedDict,
    "datetime": lambda cls: cls in _DATETIME_CLASSES,
    "numpy": _is_numpy_data_class,
    "pandas": lambda cls: issubclass(cls, _PANDAS_DATA_BASES),
}


# pandas' own table of classes and functions that moved between versions.
_PANDAS_MOVED: dict[tuple[str, str], tuple[str, str]] = getattr(pickle_compat, "_class_locations_map", {})


def _canonical_name(module: str, name: str) -> tuple[str, str]:
    """Apply the renames a pickle from older Python/numpy/pandas needs."""
    # Python 2 names (__builtin__, copy_reg, ...); they never clash with py3 ones.
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    # numpy 2 moved numpy.core to numpy._core (the old name only warns).
    if module == "numpy.core" or module.startswith("numpy.core."):
        module = "numpy._core" + module[len("numpy.core"):]
    return _PANDAS_MOVED.get((module, name), (module, name))


def _describe(module: str, name: str) -> str:
    what = f"{module}.{name}"
    if module in ("posix", "nt"):  # how os.system and friends are pickled
        what += f" (os.{name})"
    return what


def _lookup(module: str, name: str) -> Any:
    # Imports happen only for package roots on the allow-list, so naming a
    # module can't run that module's import-time code.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Warning)
        return getattr(importlib.import_module(module), name)


_resolved_cache: dict[tuple[str, str], Any] = {}


def _resolve(module: str, name: str) -> Any:
    """Return the object a pickle names, or raise _Refused. The allow-list lives here."""
    key = (module, name)
    if key in _resolved_cache:
        return _resolved_cache[key]
    module, name = _canonical_name(module, name)
    refusal = _Refused(_describe(module, name))
    if (module, name) in _SUBSTITUTES:
        found = _SUBSTITUTES[(module, name)]
    elif (module, name) in _ALLOWED_FUNCTIONS:
        found = _lookup(module, name)
    else:
        root = module.split(".", 1)[0]
        rule = _CLASS_RULES.get(root)
        # A dotted name (protocol 4 qualname) could reach through a module
        # attribute, e.g. pandas.io.common + "os.system".
        if rule is None or "." in name:
            raise refusal
        try:
            found = _lookup(module, name)
        except Exception:  # a missing or broken name is no data class either
            raise refusal from None
        if not (isinstance(found, type) and rule(found)):
            raise refusal
    _resolved_cache[key] = found
    return found


class _DefinitionGuard:
    """Undo and report changes a pickle makes to the classes and functions it names.

    The BUILD opcode sets attributes on whatever object is on the stack, and
    that can be an allowed class itself (`setattr(FrozenList, "union", 1)`).
    The values are allow-listed data, so this can't run code, but it would
    corrupt pandas for the rest of the process.
    """

    def __init__(self) -> None:
        self._saved: dict[int, tuple[Any, dict]] = {}

    def watch(self, found: Any) -> None:
        if id(found) not in self._saved and (isinstance(found, (type, types.FunctionType))):
            self._saved[id(found)] = (found, self._state(found))

    @staticmethod
    def _state(found: Any) -> dict:
        state = dict(vars(found))
        if isinstance(found, types.FunctionType):
            state["__defaults__"], state["__kwdefaults__"] = found.__defaults__, found.__kwdefaults__
        return state

    def restore(self) -> str | None:
        """Put back every watched definition; name the first one that had changed."""
        changed = None
        for found, before in self._saved.values():
            now = self._state(found)
            if now.keys() == before.keys() and all(now[key] is value for key, value in before.items()):
                continue
            changed = changed or f"{found.__module__}.{found.__qualname__}"
            for key in now.keys() - before.keys():
                delattr(found, key)
            for key, value in before.items():
                if now.get(key, _MISSING) is not value:
                    setattr(found, key, value)
        return changed


_MISSING = object()


class _AllowList:
    """find_class with the allow-list, for both unpicklers below."""

    def __init__(self, handle: io.BufferedIOBase, guard: _DefinitionGuard) -> None:
        # encoding="latin1" only affects Python 2 str payloads (numpy's advice for them).
        super().__init__(handle, encoding="latin1")
        self.guard = guard

    def find_class(self, module: str, name: str) -> Any:
        found = _resolve(module, name)
        self.guard.watch(found)
        return found


class _FastUnpickler(_AllowList, pickle.Unpickler):
    """The C unpickler with the allow-list."""


class _CompatUnpickler(_AllowList, pickle_compat.Unpickler):
    """pandas' pure-Python compatibility unpickler with the same allow-list."""


def _open_pickle(path: Path, expected: str) -> io.BufferedIOBase:
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{path} does not exist: expected {expected}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory: expected a file holding {expected}") from None
    except OSError as error:
        raise InputError(f"cannot read {path} ({error.strerror}): expected {expected}") from None
    head = handle.peek(2)[:2]
    if not head:
        handle.close()
        raise InputError(f"{path} is empty: expected {expected}")
    if head == b"\x1f\x8b":  # DataFrame.to_pickle("x.pkl.gz") compresses
        return gzip.GzipFile(fileobj=handle, mode="rb")
    return handle


def _load_objects(unpickler_class: type, handle: io.BufferedIOBase, n_objects: int) -> list[Any]:
    objects = []
    guard = _DefinitionGuard()
    try:
        for index in range(n_objects):
            # One unpickler per object, as repeated pickle.load calls do: memo
            # indices restart with every pickle.dump.
            try:
                objects.append(unpickler_class(handle, guard).load())
            except EOFError:
                if index == 0:
                    raise
                raise _TooFewObjects(index) from None
    finally:
        changed = guard.restore()
    if changed:
        raise _Refused(f"a change to the definition of {changed}")
    return objects


class _TooFewObjects(Exception):
    def __init__(self, found: int):
        super().__init__(found)
        self.found = found


def _load_with_compat_retry(handle: io.BufferedIOBase, n_objects: int) -> list[Any]:
    with warnings.catch_warnings():
        # Old pickles make pandas/numpy warn about moved names; not the user's concern.
        warnings.simplefilter("ignore", Warning)
        try:
            return _load_objects(_FastUnpickler, handle, n_objects)
        except _COMPAT_RETRY_ERRORS:
            handle.seek(0)
            return _load_objects(_CompatUnpickler, handle, n_objects)


def safe_load(
    path: str | os.PathLike, *, n_objects: int = 1, expected: str = DEFAULT_EXPECTED
) -> Any:
    """Load the pickle at `path` admitting only pandas/numpy/pyarrow data.

    With `n_objects > 1`, read that many objects pickled back to back in the
    one file and return them as a list. `expected` describes the content in
    error messages. Raises InputError for a refused name, a missing, empty,
    truncated or non-pickle file.
    """
    path = Path(path)
    handle = _open_pickle(path, expected)
    try:
        objects = _load_with_compat_retry(handle, n_objects)
    except _Refused as refused:
        raise InputError(
            f"refusing to load {path}: it asks for {refused.what}, which is not pandas/numpy/pyarrow data "
            "(pickles can run code; only data reconstructors are allowed)"
        ) from None
    except _TooFewObjects as short:
        raise InputError(
            f"{path} holds only {short.found} pickled object(s): expected {n_objects} objects, {expected}"
        ) from None
    except (*_CORRUPT_PICKLE_ERRORS, OSError, EOFError, gzip.BadGzipFile) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"{path} is truncated or not a pickle ({detail}): expected {expected}") from None
    finally:
        handle.close()
    return objects if n_objects > 1 else objects[0]


__all__ = ["safe_load", "DEFAULT_EXPECTED"]
