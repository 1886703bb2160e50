"""Reading a pickle with the exact allow-list (layer 2 of the defence; see docs/security.md).

This module owns the unpickler: `safe_load` reads one file (or an open handle
the sandbox child was given) with pandas' pure-Python compatibility unpickler,
every opcode that names or calls something routed through
`pipeline.pickle_allowlist`:
  * GLOBAL/STACK_GLOBAL: `lookup`, a fixed table; nothing is imported.
  * REDUCE: `call`, only table callables, each through a validator.
  * NEWOBJ/NEWOBJ_EX: empty instances of table classes only.
  * BUILD: refused on a table object (a class or function); dtype, ndarray,
    block manager and array states checked before and after.
One unpickler reads the file once: there is no silent second pass through a
different unpickler. The bytes read are capped (a small gzip can inflate to
GBs), and every failure is one InputError line naming the file.

The pipeline itself calls this only inside the sandbox process of
`pipeline.pickle_sandbox` (layer 1), which bounds memory, CPU and time.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Union

import pyarrow as pa
from pandas.compat import pickle_compat

from din_common.errors import InputError
from pipeline import pickle_allowlist as allow
from pipeline.pickle_allowlist import Refused

DEFAULT_EXPECTED = "a pandas DataFrame written by DataFrame.to_pickle"
# Decompressed bytes allowed per compressed byte (data pickles gzip far less than this).
MAX_INFLATION = 64
MIN_CAP_BYTES = 1 << 20

Source = Union[str, os.PathLike, BinaryIO]


class _TooLarge(Exception):
    def __init__(self, cap: int):
        super().__init__(cap)
        self.cap = cap


class _CappedReader:
    """The file as the unpickler reads it (read, readline, readinto), failing past `cap` bytes.

    A read longer than what may remain is cut to it, so a forged length field
    never makes Python allocate it: the unpickler then reports truncation.
    """

    def __init__(self, inner: BinaryIO, cap: int):
        self.inner, self.cap, self.used = inner, cap, 0

    def _allowed(self, size: int | None) -> int:
        left = self.cap - self.used + 1  # one byte more tells "too large" from "truncated"
        return left if size is None or size < 0 else min(size, left)

    def _count(self, size: int) -> None:
        self.used += size
        if self.used > self.cap:
            raise _TooLarge(self.cap)

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(self._allowed(size))
        self._count(len(data))
        return data

    def readline(self) -> bytes:
        data = self.inner.readline(self._allowed(None))
        self._count(len(data))
        return data

    def readinto(self, buffer) -> int:
        size = self.inner.readinto(memoryview(buffer)[: self._allowed(len(buffer))])
        self._count(size)
        return size


class _Unpickler(pickle_compat.Unpickler):
    """pandas' compatibility unpickler, each naming or calling opcode behind the allow-list."""

    dispatch = pickle_compat.Unpickler.dispatch.copy()

    def __init__(self, reader: _CappedReader):
        # encoding="latin1" only affects Python 2 str payloads (numpy's advice for them).
        super().__init__(reader, encoding="latin1")
        self.cap = reader.cap

    def find_class(self, module: str, name: str) -> Any:
        return allow.lookup(module, name)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = allow.call(self.stack[-1], args)

    def load_newobj(self) -> None:
        allow.new_instance_allowed(self.stack[-2], self.stack[-1])
        pickle_compat.Unpickler.dispatch[pickle.NEWOBJ[0]](self)

    def load_newobj_ex(self) -> None:
        if self.stack.pop():
            raise Refused("a new object with keyword arguments")
        self.load_newobj()

    def load_build(self) -> None:
        inst, state = self.stack[-2], self.stack[-1]
        self.stack[-1] = allow.check_build(inst, state)
        pickle._Unpickler.load_build(self)
        allow.after_build(inst)

    def load_bytearray8(self) -> None:
        # pickle allocates the bytearray before reading it: check the length against the file first.
        (size,) = struct.unpack("<Q", self.read(8))
        if size > self.cap:
            raise pickle.UnpicklingError(f"a bytearray of {size} bytes in a file that can hold {self.cap}")
        data = bytearray(size)
        self.readinto(data)
        self.append(data)

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build
    if hasattr(pickle, "BYTEARRAY8"):  # protocol 5, Python 3.8+
        dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


class _TooFewObjects(Exception):
    def __init__(self, found: int):
        super().__init__(found)
        self.found = found


def open_pickle(path: Path, name: str, expected: str) -> tuple[BinaryIO, int]:
    """Open a pickle file for reading: (handle, size), or one InputError naming it."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{name} does not exist: expected {expected}") from None
    except IsADirectoryError:
        raise InputError(f"{name} is a directory: expected a file holding {expected}") from None
    except OSError as error:
        raise InputError(f"cannot read {name} ({error.strerror}): expected {expected}") from None
    size = os.fstat(handle.fileno()).st_size
    if size == 0:
        handle.close()
        raise InputError(f"{name} is empty: expected {expected}")
    return handle, size


def _open(source: Source, name: str, expected: str) -> tuple[BinaryIO, int, bool]:
    """(handle, size, whether we opened it) for a path or an open file."""
    if not hasattr(source, "read"):
        return (*open_pickle(Path(source), name, expected), True)
    size = source.seek(0, io.SEEK_END)
    source.seek(0)
    if size == 0:
        raise InputError(f"{name} is empty: expected {expected}")
    return source, size, False


def _read_objects(handle: BinaryIO, size: int, n_objects: int) -> list[Any]:
    head = handle.read(2)
    handle.seek(0)
    if head == b"\x1f\x8b":  # DataFrame.to_pickle("x.pkl.gz") compresses
        stream: BinaryIO = gzip.GzipFile(fileobj=handle, mode="rb")
        cap = max(MIN_CAP_BYTES, size * MAX_INFLATION)
    else:
        stream, cap = handle, size
    reader = _CappedReader(stream, cap)
    objects = []
    with warnings.catch_warnings():
        # Old pickles make pandas/numpy warn about moved names; not the user's concern.
        warnings.simplefilter("ignore", Warning)
        for index in range(n_objects):
            # One unpickler per object, as repeated pickle.load calls do.
            try:
                objects.append(_Unpickler(reader).load())
            except EOFError:
                if index == 0:
                    raise
                raise _TooFewObjects(index) from None
    return objects


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def safe_load(
    source: Source, *, n_objects: int = 1, expected: str = DEFAULT_EXPECTED, name: str | None = None
) -> Any:
    """Load the pickle at `source` (a path, or an open binary file) admitting only pandas/numpy/pyarrow data.

    With `n_objects > 1`, read that many objects pickled back to back in the
    one file and return them as a list. `expected` describes the content and
    `name` the file (default: the path) in error messages. Raises InputError
    for a refused name or use, a missing, empty, truncated, oversized or
    non-pickle file.
    """
    name = name or str(Path(source) if not hasattr(source, "read") else getattr(source, "name", "pickle"))
    handle, size, opened = _open(source, name, expected)
    try:
        objects = _read_objects(handle, size, n_objects)
    except Refused as refused:
        raise InputError(
            f"refusing to load {name}: it asks for {refused.what}, which is not pandas/numpy/pyarrow data "
            "(pickles can run code; only data reconstructors are allowed)"
        ) from None
    except _TooFewObjects as short:
        raise InputError(
            f"{name} holds only {short.found} pickled object(s): expected {n_objects} objects, {expected}"
        ) from None
    except _TooLarge as large:
        raise InputError(
            f"{name} asks for more than the {large.cap} bytes it can hold (its size, or {MAX_INFLATION} times "
            f"that for gzip): expected {expected}"
        ) from None
    except MemoryError:
        raise InputError(f"{name} needs more memory than allowed to load: expected {expected}") from None
    except (pickle.UnpicklingError, EOFError, OSError, zlib.error, pa.ArrowException,
            ArithmeticError, LookupError, ValueError, TypeError, AttributeError, AssertionError,
            RecursionError, UnicodeError, NotImplementedError, ImportError) as error:
        raise InputError(
            f"{name} is truncated or not a pickle of data ({type(error).__name__}: {_first_line(error)}): "
            f"expected {expected}"
        ) from None
    finally:
        if opened:
            handle.close()
    return objects if n_objects > 1 else objects[0]


__all__ = ["safe_load", "open_pickle", "DEFAULT_EXPECTED"]
