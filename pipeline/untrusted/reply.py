"""The pickle sandbox's reply, read in a process of its own under an address-space limit (docs/security.md).

A sandbox worker (`pipeline.untrusted.sandbox`) answers with one JSON header line and one Arrow IPC
stream per frame. A worker that a pickle took over can send anything, and the parent is the Luigi
worker, which has no memory limit: so the parent never reads that pipe. This module owns the step
in between, on both of its sides:
  * the reply reader, `_child_main`: a process the parent starts with the workers' pipes and one
    scratch file per frame (unnamed, opened by the parent) as its only files. It imports pyarrow
    (not pandas), runs a sample reply through the same code (so nothing is imported later), then
    confines itself (`confine.confine`: an address-space limit of its own, sized from the files,
    CPU time, file size, Landlock, seccomp). It reads the pipes in turn, one IPC message at a time
    (`_PipeSource`: every byte and every decoded byte counted against the output cap, a length
    field never allocated beyond it), checks each frame (`checked_table`: exact columns and types,
    no compressed body, one record batch, no nulls, Arrow's full validation), writes it
    uncompressed into its scratch file and prints one JSON line per file (its status, the
    header's checked fields, all text escaped). It stops at the first file it refuses.
  * the parent's side: `parse_results` (the reader's lines, bounded, trusted for nothing) and
    `mapped_table`: a scratch file whose size is checked against the cap before it is mapped,
    then read with the same checks. Every buffer is a slice of the mapping, so what the parent
    holds for a reply is bounded by a size it knows before it reads a byte.
"""
from __future__ import annotations

import json
import mmap
import os
import re
import signal
import struct
from typing import Any, Callable

import pyarrow as pa
import pyarrow.ipc

from din_common.errors import InputError
from pipeline.untrusted.escape import one_line

MAX_HEADER_BYTES = 1 << 16
# A scratch file may exceed the cap by the framing its re-written stream adds (padding, end marker).
SCRATCH_SLACK_BYTES = 1 << 20
# The reader's exit status: 0 when every file was read, STOPPED when it refused one for its content
# (the sandbox's own exit status still decides what the user is told), OVER_LIMIT when a reply went
# past the output cap or the reader's memory (nothing else matters then: the parent stops the sandbox).
STOPPED, OVER_LIMIT = 3, 4
# What the reader says of each file.
OK, REFUSED, NO_HEADER, OVER_BUDGET, OVER_MEMORY, UNREADABLE = (
    "ok", "refused", "no-header", "over-budget", "over-memory", "unreadable")
_STATUSES = (OK, REFUSED, NO_HEADER, OVER_BUDGET, OVER_MEMORY, UNREADABLE)
# Where /proc cannot say how much address space the reader holds before it reads (not Linux).
_UNKNOWN_START_BYTES = 1 << 30

# Column kinds a job may declare, and the Arrow types that carry them.
_ARROW_KINDS: dict[str, Callable[[pa.DataType], bool]] = {
    "str": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "int64": lambda t: t == pa.int64(),
}


# ---------------------------------------------------------------- checks, both sides


def checked_table(source: Any, columns: dict[str, str], path: Any, name: str,
                  count: Callable[[int], None] = lambda size: None) -> pa.Table:
    """The next Arrow IPC stream in `source`, read message by message and checked; `count` sees decoded bytes."""
    try:
        reader = pa.ipc.MessageReader.open_stream(source)
        schema = pa.ipc.read_schema(reader.read_next_message())
        _check_schema(schema, columns, path, name)
        batches = []
        for message in _messages(reader):
            if message.type != "record batch" or batches:
                raise InputError(f"{path}: the pickle sandbox sent {name} as more than one record batch")
            if _body_compressed(message.metadata.to_pybytes()):
                raise InputError(f"{path}: the pickle sandbox sent compressed {name} data")
            batch = pa.ipc.read_record_batch(message, schema)
            count(batch.nbytes)  # decoded bytes count too
            batches.append(batch)
        table = pa.Table.from_batches(batches, schema)
        table.validate(full=True)
    except MemoryError:  # pyarrow's too: not the data's fault, the reader's limit
        raise
    except (pa.ArrowException, ValueError, OSError, StopIteration, struct.error) as error:
        raise InputError(f"{path}: the pickle sandbox sent unreadable {name} data ({one_line(str(error), 200)})") \
            from None
    for column in columns:
        if table.column(column).null_count:
            raise InputError(f"{path}: the pickle sandbox sent {name} column {column} "
                             f"with {table.column(column).null_count} nulls, expected no nulls")
    return table


def _messages(reader: Any):
    while True:
        try:
            yield reader.read_next_message()
        except StopIteration:
            return


def _check_schema(schema: pa.Schema, columns: dict[str, str], path: Any, name: str) -> None:
    if schema.names != list(columns):
        shown = one_line(str(schema.names[:10]), 300)
        raise InputError(f"{path}: the pickle sandbox sent {name} columns {shown}, expected {list(columns)}")
    for column, kind in columns.items():
        field = schema.field(column)
        if not _ARROW_KINDS[kind](field.type):
            raise InputError(f"{path}: the pickle sandbox sent {name} column {column} as "
                             f"{one_line(str(field.type), 100)}, expected {kind} without nulls")


def _body_compressed(metadata: bytes) -> bool:
    """Whether an IPC record batch message says its body is compressed (its flatbuffer's `compression`).

    Decompression would happen in read_record_batch, past every byte count: a few KB
    on the wire could become GBs.
    """
    def field(table: int, index: int) -> int:
        vtable = table - struct.unpack_from("<i", metadata, table)[0]
        entry = vtable + 4 + 2 * index
        return struct.unpack_from("<H", metadata, entry)[0] if entry + 2 <= vtable + struct.unpack_from(
            "<H", metadata, vtable)[0] else 0

    root = struct.unpack_from("<I", metadata, 0)[0]
    header = field(root, 2)  # Message.header
    if not header:
        return False
    batch = root + header + struct.unpack_from("<I", metadata, root + header)[0]
    return field(batch, 3) != 0  # RecordBatch.compression


_LAYER_NAME = re.compile(r"[a-z0-9-]{1,40}\Z")


def layer_names(value: Any, path: Any) -> list[str]:
    """The header's `layers` (the sandbox's active confinement layers), or one error naming the file."""
    if not (isinstance(value, list) and len(value) < 10
            and all(isinstance(v, str) and _LAYER_NAME.match(v) for v in value)):
        raise InputError(f"{path}: the pickle sandbox sent a malformed header")
    return value


def read_info(info: Any, info_keys: Any, path: Any) -> dict:
    """The header's counts: exactly the job's keys, each an int in 0 .. 2^63."""
    if not (isinstance(info, dict) and set(info) == set(info_keys)
            and all(type(v) is int and 0 <= v < 1 << 63 for v in info.values())):
        raise InputError(f"{path}: the pickle sandbox sent malformed counts")
    return {key: info[key] for key in info_keys}


def write_stream(out: Any, table: pa.Table) -> None:
    """`table` as one uncompressed Arrow IPC stream (what both readers accept)."""
    with pa.ipc.new_stream(out, table.schema) as writer:
        for batch in table.to_batches():
            writer.write_batch(batch)


# ---------------------------------------------------------------- the parent's side


def parse_results(output: bytes, count: int) -> dict[int, dict]:
    """{file index: the reader's record} from its output; lines that are not a well-formed record are skipped."""
    results: dict[int, dict] = {}
    for line in output.decode("utf-8", "replace").splitlines()[: 4 * count]:
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict) and type(record.get("index")) is int and 0 <= record["index"] < count \
                and record.get("status") in _STATUSES:
            results.setdefault(record["index"], record)
    return results


def mapped_table(fd: int, columns: dict[str, str], cap: int, path: Any, name: str) -> pa.Table:
    """The frame the reader left in scratch file `fd`: size checked first, then mapped and checked again."""
    size = os.fstat(fd).st_size
    if not 0 < size <= cap + SCRATCH_SLACK_BYTES:
        raise InputError(f"{path}: the pickle sandbox's reply reader left {size} bytes of {name} data, "
                         f"expected 1 to {cap + SCRATCH_SLACK_BYTES}")
    mapping = mmap.mmap(fd, size, access=mmap.ACCESS_READ)  # unmapped when the last buffer using it goes
    return checked_table(pa.BufferReader(pa.py_buffer(mapping)), columns, path, name)


# ---------------------------------------------------------------- the reader process


class _OverBudget(Exception):
    pass


class _PipeSource:
    """A worker's output pipe as the file pyarrow reads: whole reads, each byte counted against a cap."""

    closed = False

    def __init__(self, fd: int, cap: int):
        self.fd, self.cap, self.used = fd, cap, 0

    def readable(self) -> bool:
        return True

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.cap:
            raise _OverBudget()

    def read(self, size: int = -1) -> bytes:
        # A length field can claim anything: never allocate more than the cap leaves.
        wanted = self.cap - self.used + 1 if size is None or size < 0 else min(size, self.cap - self.used + 1)
        buffer, got = bytearray(wanted), 0
        view = memoryview(buffer)
        while got < wanted:
            count = os.readv(self.fd, [view[got:]])
            if count == 0:
                break
            got += count
        view.release()
        self.take(got)
        del buffer[got:]
        return bytes(buffer) if got < 4096 else buffer

    def read_line(self, limit: int) -> bytes:
        line = bytearray()
        while len(line) < limit:
            byte = os.read(self.fd, 1)
            self.take(len(byte))
            if not byte or byte == b"\n":
                return bytes(line) + byte
            line += byte
        return b""


def _parse_header(line: bytes) -> dict | None:
    if not line.endswith(b"\n"):
        return None
    try:
        header = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: "[[[[..." 60 k deep
        return None
    return header if isinstance(header, dict) else None


def _scratch(fd: int) -> Any:
    return pa.PythonFile(os.fdopen(fd, "wb", buffering=0, closefd=False), mode="w")


def _read_file(request: dict) -> dict:
    """One worker's reply: checked, its frames written to their scratch files; returns what to report."""
    name = request["name"]
    source = _PipeSource(request["pipe"], request["output_bytes"])
    try:
        header = _parse_header(source.read_line(MAX_HEADER_BYTES))
        if header is None:
            return {"status": NO_HEADER}
        layers = layer_names(header.get("layers"), name)
        if not header.get("ok"):
            return {"status": REFUSED, "layers": layers,
                    "error": one_line(str(header.get("error", "the pickle sandbox failed")))}
        for frame, columns in request["frames"].items():
            write_stream(_scratch(request["scratch"][frame]), checked_table(source, columns, name, frame, source.take))
        if source.read(1):
            raise InputError(f"{name}: the pickle sandbox sent more data than the frames it declared")
        return {"status": OK, "layers": layers, "info": read_info(header.get("info"), request["info_keys"], name)}
    except _OverBudget:
        return {"status": OVER_BUDGET}
    except MemoryError:
        return {"status": OVER_MEMORY}
    except InputError as error:
        return {"status": UNREADABLE, "error": one_line(error.message)}
    except Exception as error:  # noqa: BLE001  (anything the child's bytes make a reader raise)
        return {"status": UNREADABLE, "error": f"{name}: the pickle sandbox sent unreadable data "
                                               f"({type(error).__name__}: {one_line(str(error), 200)})"}
    finally:
        os.close(request["pipe"])


def _warm_up() -> None:
    """A sample reply through `_read_file`, so every lazy import happens before the reader is confined."""
    sample = pa.BufferOutputStream()
    sample.write(json.dumps({"ok": True, "info": {"rows": 1}, "layers": ["rlimits"]}).encode() + b"\n")
    write_stream(sample, pa.table({"text": pa.array(["a"]), "number": pa.array([1], pa.int64())}))
    read_end, write_end = os.pipe()
    os.write(write_end, sample.getvalue().to_pybytes())
    os.close(write_end)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        _read_file({"name": "warm-up sample", "pipe": read_end, "scratch": {"sample": null}, "info_keys": ["rows"],
                    "frames": {"sample": {"text": "str", "number": "int64"}}, "output_bytes": 1 << 20})
    finally:
        os.close(null)


def _address_space() -> int:
    """Bytes of address space this process holds now (its libraries, pyarrow's reserved arenas)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return _UNKNOWN_START_BYTES


def _child_main(argv: list[str]) -> None:
    """The reader: warm up, confine, then read each worker's reply in turn; one JSON line per file on stdout."""
    spec = json.loads(argv[0])
    from pipeline.untrusted import confine

    _warm_up()
    if hasattr(signal, "SIGXFSZ"):  # past the file-size limit a write fails (EFBIG) instead of killing the reader
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    largest_scratch = max(request["output_bytes"] for request in spec["files"]) + SCRATCH_SLACK_BYTES
    confine.confine(_address_space() + int(spec["memory"]), int(spec["cpu"]), largest_scratch)
    code = 0
    for index, request in enumerate(spec["files"]):
        result = _read_file(request)
        os.write(1, (json.dumps({"index": index, **result}) + "\n").encode())
        if result["status"] != OK:
            code = OVER_LIMIT if result["status"] in (OVER_BUDGET, OVER_MEMORY) else STOPPED
            break
    os._exit(code)
