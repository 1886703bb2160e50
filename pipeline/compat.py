"""The version differences of the stage-1 libraries, in one place.

Stage 1 runs on two stacks from one codebase: the modern one (pandas 3, pyarrow
26, numpy 2) and the Ascend host's (pandas 1.3 / 1.4, pyarrow 12 / 21, numpy
1.19). Everything that the two disagree on lives here; the rest of `pipeline/`
calls these names and never asks which version it runs on.

Text columns. pandas 3 stores text as its `str` dtype (arrow-backed, NaN for
missing): building a column from an arrow array is zero-copy and pickles hold
arrow buffers. pandas 1.x has no such dtype (`pd.array(x, dtype="str")` there
makes a fixed-width numpy unicode array), so on the old stack text is the
classic object column of Python str, which is also what the Amazon pickles
hold. The values are the same either way; only the storage differs.

Pickles. Python 3.8+ pickles with protocol 5 by default, which Python 3.7 cannot
read; the raw pickles stage 1 writes use protocol 4, so a raw dir made by an old
stack under Python 3.9 still loads on a Python 3.7 Ascend host. (Pickles of
pandas 3's `str` columns need pandas >= 2.3 whatever the protocol.)
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


# The highest protocol every supported Python (3.7 on) reads.
RAW_PICKLE_PROTOCOL = 4


def _arrow_str_dtype():
    """pandas' arrow-backed `str` dtype (NaN as missing), or None where pandas lacks it (< 2.3)."""
    try:
        return pd.StringDtype("pyarrow", na_value=np.nan)
    except TypeError:  # pandas < 2.3: StringDtype() takes no na_value
        return None


_ARROW_STR = _arrow_str_dtype()

# The dtype of every text column stage 1 builds: `str` on pandas 3, object before.
TEXT_DTYPE = _ARROW_STR if _ARROW_STR is not None else np.dtype(object)


def text_array(values) -> pd.api.extensions.ExtensionArray:
    """A pandas array of text from a list / numpy array of str (in the stack's TEXT_DTYPE)."""
    return pd.array(values if _ARROW_STR is not None else np.asarray(values, dtype=object), dtype=TEXT_DTYPE)


def text_series(values: np.ndarray, take: np.ndarray | None = None) -> pd.Series:
    """A text Series of `values[take]` (all of `values` without `take`); values are str."""
    if _ARROW_STR is None:
        picked = values if take is None else values[take]
        return pd.Series(picked.astype(object))
    array = pa.array(values, type=pa.string())
    if take is not None:
        array = array.take(pa.array(take))
    return pd.Series(array, dtype=_ARROW_STR)


def as_text(column: pd.Series) -> pd.api.extensions.ExtensionArray:
    """A column already known to hold only str values, as a text array of TEXT_DTYPE."""
    return column.astype(TEXT_DTYPE).array


def is_arrow_string_dtype(dtype) -> bool:
    """True for pandas' `ArrowDtype(pa.string())` / `large_string` (pandas >= 1.5; absent before)."""
    arrow_dtype = getattr(pd, "ArrowDtype", None)
    return arrow_dtype is not None and isinstance(dtype, arrow_dtype) and (
        pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(dtype.pyarrow_dtype)
    )
