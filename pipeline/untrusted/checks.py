"""Checks of the states numpy and pandas trust, for the allow-list of `pipeline.untrusted.allowlist`.

This module owns what a pickle may put inside the objects the allow-list lets
it build: a numpy dtype equal in every field to the one its type code names
(numpy trusts a pickled dtype's flags, sizes and field offsets), ndarray data
of exactly the size its shape and dtype need, pandas blocks placed inside
their frame and covering each column once, pandas arrays whose inner ndarray
or Arrow data fit their dtype, and Categorical codes inside their categories.
Every failure is `Refused`, described without repr'ing what the file holds.
"""
from __future__ import annotations

import pickle
import re
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

PANDAS_MAJOR = int(pd.__version__.split(".")[0])
MAX_ITEMSIZE = 1 << 20  # a dtype like U1000000000 would make one element take GBs
# Protocol 5 out-of-band buffers (Python 3.8+).
BUFFERS = (bytes, bytearray) + ((pickle.PickleBuffer,) if hasattr(pickle, "PickleBuffer") else ())


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


def named(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"



# ---------------------------------------------------------------- numpy checks

DTYPE_CODE = re.compile(r"[<>|=]?[biufcmMOSU?][0-9]{0,7}\Z")


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


def element_count(shape: Any, where: str) -> int:
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise Refused(f"{where} with shape {short(shape)}")
    count = 1
    for n in shape:
        count *= n
    return count


def check_dtype_state(state: Any) -> None:
    if not (isinstance(state, tuple) and len(state) in (8, 9) and all(part is None for part in state[2:5])):
        raise Refused("numpy.dtype state with subarrays, fields or an unknown layout")


def check_array_state(array: np.ndarray, state: Any) -> None:
    if type(array) is not np.ndarray or not (isinstance(state, tuple) and len(state) == 5):
        raise Refused("numpy.ndarray state of an unknown layout")
    _version, shape, dtype, _fortran, data = state
    count = element_count(shape, "numpy.ndarray")
    dtype = check_dtype(dtype, "numpy.ndarray")
    if dtype.hasobject:
        if not (isinstance(data, list) and len(data) == count):
            raise Refused("an object numpy.ndarray whose items do not match its shape")
    elif not (isinstance(data, (bytes, bytearray, str)) and len(data) == count * dtype.itemsize):
        raise Refused("a numpy.ndarray whose data does not match its shape and dtype")


# ---------------------------------------------------------------- pandas checks


def placement_positions(locs: Any, n_items: int, where: str) -> np.ndarray:
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


def check_blocks(axes: Any, blocks: list[tuple[Any, Any]], where: str) -> None:
    """Every block inside the axes, with the right shape, each column covered once."""
    if not (isinstance(axes, (list, tuple)) and len(axes) in (1, 2) and all(isinstance(a, pd.Index) for a in axes)):
        raise Refused(f"{where} with axes that are not 1 or 2 pandas Indexes")
    n_items, n_rows = len(axes[0]), len(axes[-1])
    covered = np.zeros(n_items, dtype=np.int64)
    for values, locs in blocks:
        positions = placement_positions(locs, n_items, where)
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


def check_manager_state(state: Any) -> None:
    try:
        inner = state[3]["0.14.1"]
        axes, blocks = inner["axes"], [(b["values"], b["mgr_locs"]) for b in inner["blocks"]]
    except (TypeError, KeyError, IndexError):
        raise Refused("a pandas BlockManager state of an unknown layout") from None
    check_blocks(axes, blocks, "a pandas BlockManager")


def check_backed_array(array: Any) -> None:
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
        raise Refused(f"a {named(type(array))} array")


def check_masked_array(array: Any) -> None:
    data, mask = getattr(array, "_data", None), getattr(array, "_mask", None)
    if not (type(data) is np.ndarray and type(mask) is np.ndarray and mask.dtype == np.bool_
            and data.shape == mask.shape and data.ndim == 1
            and check_dtype(data.dtype, type(array).__name__).kind in "biuf"):
        raise Refused(f"a {type(array).__name__} whose data and mask do not match")
    try:
        declared = array.dtype.numpy_dtype
    except (KeyError, AttributeError, TypeError):  # IntegerArray derives its dtype from the data's
        declared = None
    if declared is None or data.dtype != declared:  # pandas would read float data as its declared ints
        raise Refused(f"a {type(array).__name__} over {data.dtype} data, not the dtype it declares")


ARROW_DATA = "_pa_array" if PANDAS_MAJOR >= 2 else "_data"


def arrow_state(state: Any) -> Any:
    # pandas 2+ keeps the chunked array in _pa_array, pandas 1.x in _data.
    if isinstance(state, dict):
        other = "_data" if ARROW_DATA == "_pa_array" else "_pa_array"
        if other in state and ARROW_DATA not in state:
            state = dict(state)
            state[ARROW_DATA] = state.pop(other)
        data = state.get(ARROW_DATA)
        if PANDAS_MAJOR < 2 and isinstance(data, pa.Array):  # pandas 2.x wrote one large_string array
            state = dict(state)
            state[ARROW_DATA] = pa.chunked_array([data.cast(pa.string()) if data.type == pa.large_string() else data])
    return state


def check_arrow_array(array: Any) -> None:
    data = getattr(array, ARROW_DATA, None)
    if not isinstance(data, pa.ChunkedArray):
        raise Refused(f"a {type(array).__name__} without a pyarrow ChunkedArray inside")
    dtype = getattr(array, "_dtype", None) or getattr(array, "dtype", None)
    expected = getattr(dtype, "pyarrow_dtype", None)
    if expected is not None and data.type != expected:
        raise Refused(f"a {type(array).__name__} whose data type differs from its dtype")
