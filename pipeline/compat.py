"""The version differences of the stage-1 libraries, in one place.

Stage 1 runs on two stacks from one codebase: the modern one (pandas 3, pyarrow
26, numpy 2) and the Ascend host's (pandas 1.3 / 1.4, pyarrow 12 / 21, numpy
1.19, Python 3.7 - 3.9). Everything that the two disagree on lives here; the
rest of `pipeline/` calls these names and never asks which version it runs on.

Text columns are arrow-backed on both stacks (`TEXT_DTYPE`, `text_dtype()`): building one from an
arrow array is zero-copy, remapping reads its buffers without converting Python
strings, and its pickle holds arrow buffers, which load ~5x faster than an object
column of str. pandas 3 calls this dtype `str` (NaN for missing); pandas 1.3 - 2.2
spell it `StringDtype("pyarrow")`, with pd.NA for missing, and have no `str`
(`pd.array(x, dtype="str")` there makes a fixed-width numpy unicode array).
Stage 1 keeps no missing text, so the two agree on every value it writes.

Parquet. pyarrow 12 and 13+ differ in one default (`PARQUET_WRITE_OPTIONS`);
with it set, stage 1's tables and their schemas are equal on both stacks. Page checksums
exist from pyarrow 13 on (`PARQUET_PAGE_CHECKSUMS`).

Pickles. Python 3.8+ pickles with protocol 5 by default, which Python 3.7 cannot
read; the raw pickles stage 1 writes use protocol 4, so a raw dir made under
Python 3.9 still loads on a Python 3.7 Ascend host. (pandas 3's `str` columns
need pandas >= 2.3 to unpickle whatever the protocol; pandas 3 reads the pickles
of pandas 1.x.)

pandas is imported by the functions that use it, never by this module: the `luigi` command's
process imports this module (through pipeline.tasks.base) and has no use for pandas, whose
import is half of its start-up (docs/performance.md, "Stage 1"). `TEXT_DTYPE` is made on first use.
"""
from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    import pandas as pd

# The highest protocol every supported Python (3.7 on) reads.
RAW_PICKLE_PROTOCOL = 4

# Page checksums (CRC32 of every data page) are written and verified where pyarrow has them
# (13 on): a bit flip in a stage-1 parquet is then an error, not different ids. pyarrow 12 (the
# Python 3.7 stack) has neither option; there only damage that breaks decoding is caught.
PARQUET_PAGE_CHECKSUMS = "write_page_checksum" in inspect.signature(pq.ParquetWriter.__init__).parameters

# Parquet list columns name their items `element`, as the Parquet spec does: pyarrow's
# default from 13 on; pyarrow 12 writes `item` unless asked, so ask on every stack.
PARQUET_WRITE_OPTIONS = {"use_compliant_nested_type": True,
                         **({"write_page_checksum": True} if PARQUET_PAGE_CHECKSUMS else {})}
PARQUET_READ_OPTIONS = {"page_checksum_verification": True} if PARQUET_PAGE_CHECKSUMS else {}


@functools.lru_cache(maxsize=None)
def text_dtype() -> pd.StringDtype:
    """The dtype of every text column stage 1 builds (also `TEXT_DTYPE`)."""
    import pandas as pd

    try:
        return pd.StringDtype("pyarrow", na_value=np.nan)  # pandas >= 2.3: pandas 3's `str`
    except TypeError:  # pandas < 2.3: StringDtype() takes no na_value
        return pd.StringDtype("pyarrow")


def __getattr__(name: str):
    # `TEXT_DTYPE` as a module attribute, made (and pandas imported) only when asked for.
    if name == "TEXT_DTYPE":
        return text_dtype()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def text_array(values) -> pd.api.extensions.ExtensionArray:
    """A TEXT_DTYPE array from a list or numpy array of str (None for missing)."""
    import pandas as pd

    return pd.array(values, dtype=text_dtype())


def text_series(values: np.ndarray, take: np.ndarray | None = None) -> pd.Series:
    """A TEXT_DTYPE Series of `values[take]` (all of `values` without `take`); values are str."""
    import pandas as pd

    array = pa.array(values, type=pa.string())
    if take is not None:
        array = array.take(pa.array(take))
    return pd.Series(array, dtype=text_dtype())


def as_text(column: pd.Series) -> pd.api.extensions.ExtensionArray:
    """A column already known to hold only str values, as a TEXT_DTYPE array."""
    return column.astype(text_dtype()).array


def is_arrow_string_dtype(dtype) -> bool:
    """True for pandas' `ArrowDtype(pa.string())` / `large_string` (pandas >= 1.5; absent before)."""
    import pandas as pd

    arrow_dtype = getattr(pd, "ArrowDtype", None)
    return arrow_dtype is not None and isinstance(dtype, arrow_dtype) and (
        pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(dtype.pyarrow_dtype)
    )
