"""Reading a pickle with the exact allow-list (layer 2 of the defence; see docs/security.md).

This module owns the unpickler: `safe_load` reads one file (or an open handle
the sandbox child was given) with pandas' pure-Python compatibility unpickler,
every opcode that names or calls something routed through
`pipeline.untrusted.allowlist`:
  * GLOBAL/STACK_GLOBAL: `lookup`, a fixed table; nothing is imported.
  * REDUCE: `call`, only table callables, each through a validator.
  * NEWOBJ/NEWOBJ_EX: empty instances of table classes only.
  * BUILD: refused on a table object (a class or function) or an Index, run
    once per object; dtype, ndarray, block manager and array states checked
    before and after, dict states only with the keys pandas writes.
  * INST/OBJ: refused. SETITEM(S)/APPEND(S)/ADDITEMS: only on a plain
    container this unpickler made and no validator has seen (nothing checked
    is changed afterwards).
  * INT/LONG/FLOAT text and Python 2 strings: read as C pickle reads them, or
    refused; at most MAX_HASHED_KEYS dict keys/set items with choosable hashes.
One unpickler reads the file once: there is no silent second pass through a
different unpickler. The bytes read are capped (a small gzip can inflate to
GBs), and every failure is one InputError line naming the file.

The pipeline itself calls this only inside the sandbox process of
`pipeline.untrusted.sandbox` (layer 1), which bounds memory, CPU and time.
"""
from __future__ import annotations

import collections
import gzip
import io
import math
import os
import pickle
import re
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Union

import pyarrow as pa
from pandas.compat import pickle_compat

from din_common.errors import InputError
from pipeline.untrusted import allowlist as allow
from pipeline.untrusted.allowlist import Refused, short
from pipeline.untrusted.escape import printable
from pipeline.untrusted.files import open_pickle

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


# Hashed values whose hash a file can choose (ints, floats, tuples: not the
# randomised str/bytes hash): keys of dicts and items of sets, in one load. Many
# keys with one hash make each insert compare against all earlier ones.
MAX_HASHED_KEYS = 2_000
# What C pickle (and so pandas' read_pickle) reads from the text opcodes INT, LONG, FLOAT
# (protocol 0/1): only the forms Python writes, so both readers agree on every value.
_INT_TEXT = re.compile(rb"-?(0|[1-9][0-9]*)\n\Z")
_BOOL_TEXT = {b"00\n": False, b"01\n": True}
_LONG_TEXT = re.compile(rb"-?(0|[1-9][0-9]*)L?\n\Z")
_FLOAT_TEXT = re.compile(rb"(-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?|-?inf|nan)\n\Z")
_UNHASHED = (str, bytes)
_ATOMS = (str, bytes, int, float, bool, type(None))
_MUTABLE = (dict, list, set, collections.OrderedDict)


class _Unpickler(pickle_compat.Unpickler):
    """pandas' compatibility unpickler, each naming, calling or mutating opcode behind the allow-list.

    Checked, then changed: an object is checked when a validator takes it off
    the stack (a REDUCE/NEWOBJ argument, a BUILD state, or inside one), so from
    then on nothing may change it. The only ways back to it are the memo (GET)
    and DUP, so an object fetched that way is never changed: SETITEM(S),
    APPEND(S) and ADDITEMS only fill a plain dict, OrderedDict, list or set this
    unpickler made and never fetched, and BUILD runs once per object, never on
    one fetched. (Writers fill each container and object right after making
    it, before any reference back to it; only self-referencing data differs.)
    """

    dispatch = pickle_compat.Unpickler.dispatch.copy()

    def __init__(self, reader: _CappedReader):
        # Python 2 str payloads decode as ASCII, as C pickle (and pd.read_pickle) does by default.
        super().__init__(reader, encoding="ASCII")
        self.cap = reader.cap
        self._fresh: dict[int, Any] = {}  # containers made here and never fetched (kept: ids stay theirs)
        self._fetched: dict[int, Any] = {}  # objects taken back from the memo or DUP'd
        self._built: dict[int, Any] = {}  # objects a BUILD filled
        self._hashed = 0

    # ------------------------------------------------ names and calls

    def find_class(self, module: str, name: str) -> Any:
        return allow.lookup(module, name)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if (func is set or func is frozenset) and isinstance(args, tuple) and args \
                and isinstance(args[0], (list, tuple)):
            self._count_keys(args[0])
        result = allow.call(func, args)
        if (func is set or func is collections.OrderedDict) and type(result) in _MUTABLE:
            self._fresh[id(result)] = result
        self.stack[-1] = result

    def load_newobj(self) -> None:
        allow.new_instance_allowed(self.stack[-2], self.stack[-1])
        pickle_compat.Unpickler.dispatch[pickle.NEWOBJ[0]](self)

    def load_newobj_ex(self) -> None:
        if self.stack.pop():
            raise Refused("a new object with keyword arguments")
        self.load_newobj()

    def load_build(self) -> None:
        inst, state = self.stack[-2], self.stack[-1]
        if id(inst) in self._fetched or id(inst) in self._built:
            raise Refused(f"a change to a {type(inst).__name__} after it was checked or used")
        self.stack[-1] = allow.check_build(inst, state)
        self._built[id(inst)] = inst
        pickle._Unpickler.load_build(self)
        allow.after_build(inst)

    def load_inst(self) -> None:
        raise Refused("an INST opcode (a call of a class by name, which no supported writer emits)")

    def load_obj(self) -> None:
        raise Refused("an OBJ opcode (a call of a class on the stack, which no supported writer emits)")

    def load_bytearray8(self) -> None:
        # pickle allocates the bytearray before reading it: check the length against the file first.
        (size,) = struct.unpack("<Q", self.read(8))
        if size > self.cap:
            raise pickle.UnpicklingError(f"a bytearray of {size} bytes in a file that can hold {self.cap}")
        data = bytearray(size)
        self.readinto(data)
        self.append(data)

    # ------------------------------------------------ containers

    def _fetched_again(self, index: int) -> None:
        """Memo entry `index` back on the stack: an object checked or shared, never changed again."""
        try:
            obj = self.memo[index]
        except KeyError:
            raise pickle.UnpicklingError(f"Memo value not found at index {index}") from None
        self.append(obj)
        if type(obj) not in _ATOMS:
            self._fresh.pop(id(obj), None)
            self._fetched[id(obj)] = obj

    def load_get(self) -> None:
        self._fetched_again(int(self.readline()[:-1]))

    def load_binget(self) -> None:
        self._fetched_again(self.read(1)[0])

    def load_long_binget(self) -> None:
        self._fetched_again(struct.unpack("<I", self.read(4))[0])

    def load_dup(self) -> None:
        obj = self.stack[-1]
        self.append(obj)
        self._fresh.pop(id(obj), None)
        self._fetched[id(obj)] = obj

    def _target(self, opcode: str, kind: type) -> Any:
        target = self.stack[-1]
        if id(target) not in self._fresh or not isinstance(target, kind):
            raise Refused(f"{opcode} on a {type(target).__name__} that is not a new plain container "
                          "(only a dict, list or set the file is still filling, never one fetched again, may change)")
        return target

    def _count_keys(self, keys: Any) -> None:
        self._hashed += sum(1 for key in keys if not isinstance(key, _UNHASHED))
        if self._hashed > MAX_HASHED_KEYS:
            raise Refused(f"more than {MAX_HASHED_KEYS} dict keys or set items other than strings")

    def _made(self, container: Any) -> None:
        self.append(container)
        self._fresh[id(container)] = container

    def load_empty_dictionary(self) -> None:
        self._made({})

    def load_empty_list(self) -> None:  # one per list of an object column: inlined
        made = []
        self.append(made)
        self._fresh[id(made)] = made

    def load_empty_set(self) -> None:
        self._made(set())

    def load_list(self) -> None:
        self._made(self.pop_mark())

    def load_dict(self) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise pickle.UnpicklingError("odd number of items for DICT")
        self._count_keys(items[::2])
        self._made({items[i]: items[i + 1] for i in range(0, len(items), 2)})

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        self._count_keys(items)
        self.append(frozenset(items))

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self._count_keys((key,))
        self._target("SETITEM", dict)[key] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise pickle.UnpicklingError("odd number of items for SETITEMS")
        target = self._target("SETITEMS", dict)
        self._count_keys(items[::2])
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def load_append(self) -> None:
        value = self.stack.pop()
        self._target("APPEND", list).append(value)

    def load_appends(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if id(target) not in self._fresh or type(target) is not list:
            self._target("APPENDS", list)  # raises
        target.extend(items)

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self._target("ADDITEMS", set)
        self._count_keys(items)
        target.update(items)

    # ------------------------------------------------ text forms, read as C pickle reads them

    def load_int(self) -> None:
        data = self.readline()
        if data in _BOOL_TEXT:
            self.append(_BOOL_TEXT[data])
        elif _INT_TEXT.match(data) and data != b"-0\n":  # C pickle reads "-0" as False
            self.append(int(data))
        else:
            raise pickle.UnpicklingError(f"an INT opcode with the text {short(data)}")

    def load_long(self) -> None:
        data = self.readline()
        if not _LONG_TEXT.match(data):
            raise pickle.UnpicklingError(f"a LONG opcode with the text {short(data)}")
        self.append(int(data.rstrip(b"L\n")))

    def load_float(self) -> None:
        data = self.readline()
        value = float(data) if _FLOAT_TEXT.match(data) else None
        if value is None or (math.isinf(value) and b"inf" not in data):  # C pickle refuses an overflow
            raise pickle.UnpicklingError(f"a FLOAT opcode with the text {short(data)}")
        self.append(value)

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.INST[0]] = load_inst
    dispatch[pickle.OBJ[0]] = load_obj
    dispatch[pickle.EMPTY_DICT[0]] = load_empty_dictionary
    dispatch[pickle.EMPTY_LIST[0]] = load_empty_list
    dispatch[pickle.LIST[0]] = load_list
    dispatch[pickle.DICT[0]] = load_dict
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.APPEND[0]] = load_append
    dispatch[pickle.APPENDS[0]] = load_appends
    dispatch[pickle.GET[0]] = load_get
    dispatch[pickle.BINGET[0]] = load_binget
    dispatch[pickle.LONG_BINGET[0]] = load_long_binget
    dispatch[pickle.DUP[0]] = load_dup
    dispatch[pickle.INT[0]] = load_int
    dispatch[pickle.LONG[0]] = load_long
    dispatch[pickle.FLOAT[0]] = load_float
    if hasattr(pickle, "EMPTY_SET"):  # protocol 4
        dispatch[pickle.EMPTY_SET[0]] = load_empty_set
        dispatch[pickle.FROZENSET[0]] = load_frozenset
        dispatch[pickle.ADDITEMS[0]] = load_additems
    if hasattr(pickle, "BYTEARRAY8"):  # protocol 5, Python 3.8+
        dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


class _TooFewObjects(Exception):
    def __init__(self, found: int):
        super().__init__(found)
        self.found = found


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
    text = printable(str(error).splitlines()[0]) if str(error) else type(error).__name__
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
            f"refusing to load {name}: it asks for {printable(refused.what)}, which is not pandas/numpy/pyarrow data "
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
