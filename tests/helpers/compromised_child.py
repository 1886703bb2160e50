"""A deliberately compromised pickle-sandbox child, for tests/pipeline/test_pickle_attacks.py only.

It stands in for `pipeline.untrusted.sandbox._child_main` when a test sets
`pipeline.untrusted.sandbox._CHILD_MODULE` to this module (in-process; no file, setting or
environment variable can). It acts as if a pickle had taken over the child
entirely: it is not confined, and it sends the worst replies it can (to the
reply reader, whose output the parent maps), chosen by the first line of the
"pickle" file it is given. The parent must end each with one printable ERROR
line, and the memory of the whole process tree must stay bounded.
"""
from __future__ import annotations

import json
import os
import struct
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.ipc

HOSTILE_TEXT = "\x1b[2J\x1b]0;owned\x07\u202egnp.exe\u0000"
REVIEW_COLUMNS = ("reviewerID", "asin", "unixReviewTime")


def _header(ok: bool = True, **fields) -> bytes:
    return (json.dumps({"ok": ok, "info": {"rows": 1}, "layers": ["rlimits"], **fields}) + "\n").encode()


def _stream(batches: list, schema: pa.Schema, compression: str | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _reviews(rows: int) -> pa.RecordBatch:
    """`rows` reviews of empty ids, built from buffers (all zeros: they compress to almost nothing)."""
    offsets = pa.py_buffer(np.zeros(rows + 1, dtype=np.int32).tobytes())
    text = pa.StringArray.from_buffers(rows, offsets, pa.py_buffer(b""))
    return pa.record_batch([text, text, pa.array(np.zeros(rows, dtype=np.int64))], names=list(REVIEW_COLUMNS))


def _huge_body_length(stream: bytes, length: int = 1 << 40) -> bytes:
    """The stream with its record batch message claiming a body of `length` bytes (1 TiB)."""
    reader = pa.ipc.MessageReader.open_stream(pa.BufferReader(stream))
    schema_size = 8 + len(reader.read_next_message().metadata.to_pybytes())
    metadata = bytearray(reader.read_next_message().metadata.to_pybytes())
    root = struct.unpack_from("<I", metadata, 0)[0]
    vtable = root - struct.unpack_from("<i", metadata, root)[0]
    body_field = struct.unpack_from("<H", metadata, vtable + 4 + 2 * 3)[0]  # Message.bodyLength
    struct.pack_into("<q", metadata, root + body_field, length)
    return stream[:schema_size] + b"\xff\xff\xff\xff" + struct.pack("<i", len(metadata)) + bytes(metadata)


def reply(mode: str) -> tuple[bytes, int, bytes]:
    """(bytes on the worker's pipe, its exit status, its stderr) for each way of lying."""
    one = _reviews(1)
    if mode == "deep-header":
        return b"[" * 60_000 + b"\n", 0, b""
    if mode == "no-newline":
        return b"x" * (1 << 20), 0, b""
    if mode == "escape-error":
        return _header(False, error=f"reviews.pkl {HOSTILE_TEXT}"), 0, b""
    if mode == "escape-stderr":
        return b"", 1, f"Traceback\nboom {HOSTILE_TEXT}\n".encode()
    if mode == "escape-layers":
        return _header(layers=[HOSTILE_TEXT]) + _stream([one], one.schema), 0, b""
    if mode == "escape-columns":
        batch = pa.record_batch([pa.array(["A"])], names=[HOSTILE_TEXT])
        return _header() + _stream([batch], batch.schema), 0, b""
    if mode == "huge-count":
        return _header(info={"rows": 10 ** 4000}) + _stream([one], one.schema), 0, b""
    if mode == "compressed":
        big = _reviews(10_000_000)
        return _header() + _stream([big], big.schema, "zstd"), 0, b""
    if mode == "repeated":
        return _header() + _stream([one] * 100_000, one.schema), 0, b""
    if mode == "huge-body":
        return _header() + _huge_body_length(_stream([one], one.schema)), 0, b""
    if mode == "big-body":  # 3 GiB: an allocation that succeeds where nothing limits the reader
        return _header() + _huge_body_length(_stream([one], one.schema), 3 << 30), 0, b""
    raise ValueError(mode)


def _child_main(argv: list[str]) -> None:
    requests = json.loads(argv[0])
    status = os.fdopen(1, "w")
    for index, request in enumerate(requests):
        mode = os.read(request["source"], 100).decode("ascii", "replace").strip()
        if mode == "hang":
            time.sleep(3600)
        code = 0
        if mode in ("flood", "big-body"):  # a body that claims 1 TiB (3 GiB), and really keeps coming
            chunk = b"\0" * (1 << 20)
            try:
                os.write(request["out"], reply("huge-body" if mode == "flood" else mode)[0])
                while True:
                    os.write(request["out"], chunk)
            except OSError:  # the reader closed its end (at the cap, or at its memory limit)
                code = 1
        else:
            data, code, err = reply(mode)
            sys.stderr.buffer.write(err)
            sys.stderr.flush()
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(request["out"], view[: 1 << 20]):]
            except OSError:
                pass
        os.close(request["out"])
        status.write(json.dumps({"index": index, "returncode": code}) + "\n")
        status.flush()
    os._exit(0)
