"""Loading an untrusted pickle in a child process that can only compute (layer 1; see docs/security.md).

This module owns both ends of the sandbox:
  * the parent, `load(path, job)`: opens the file itself, starts
    one child process (`_CHILD_BOOTSTRAP`) with only the open file
    descriptors and an output pipe per file, stdin closed; waits with a
    wall-clock timeout and an output cap, and turns a crash, a hang or a
    limit hit into one InputError naming the file. What comes back is a JSON header and one
    uncompressed Arrow record batch per frame, never a pickle, read as it arrives
    (`_Receiver`: every byte and decoded byte counted, so the parent's memory is bounded by
    the cap): the parent checks the schema (exact columns and types), the values (no nulls,
    Arrow's full validation) and the info dict, and escapes whatever text the child sends.
  * the child, `_child_main`: imports once and forks one worker per file
    (their start-up is shared, their work runs in parallel), then reports
    how each worker ended. Before forking it warms up (a sample of each
    job's data goes through the same path, so pandas/pyarrow's lazy imports
    happen now). A worker closes stdin, confines itself (`confine.confine`: resource
    limits, Landlock, seccomp), and only then reads the first opcode with
    `safe_load` (layer 2) and runs the job's check.
A `SandboxJob` (pipeline.untrusted.job) says what a file must hold: it is defined next to its
checks (pipeline.raw) and found by name in the child (`pipeline.raw.sandbox_jobs.SANDBOX_JOBS`).
"""
from __future__ import annotations

import importlib
import io
import json
import logging
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.ipc

from din_common.errors import InputError
from pipeline.compat import TEXT_DTYPE
from pipeline.untrusted.job import SandboxJob
from pipeline.untrusted.checks import printable

LOGGER = logging.getLogger("luigi-interface")
# Limits, each scaled with the file: the pure-Python unpickler's time grows with the opcodes it
# reads, and a data frame needs a few times its pickle in memory (docs/security.md, "Limits").
BASE_TIMEOUT_S, TIMEOUT_S_PER_MB = 120.0, 1.0
BASE_MEMORY_BYTES, MEMORY_PER_BYTE = 3 << 30, 16
BASE_OUTPUT_BYTES, OUTPUT_PER_BYTE = 64 << 20, 4
# A gzip pickle's limits count it as this many times its size (about what data pickles
# compress by, docs/security.md); the size its trailer claims is the writer's word, not ours.
GZIP_SCALE = 4
MAX_HEADER_BYTES = 1 << 16
MAX_STDERR_BYTES = 1 << 14
MAX_MESSAGE_CHARS = 1000
KERNEL_LAYERS = ("landlock", "seccomp")

# Column kinds a job may declare, and the Arrow types that carry them.
_ARROW_KINDS: dict[str, Callable[[pa.DataType], bool]] = {
    "str": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "int64": lambda t: t == pa.int64(),
}


class Limits(NamedTuple):
    timeout_s: float
    memory_bytes: int
    cpu_seconds: int
    output_bytes: int


def limits_for(path: Path, size: int) -> Limits:
    """Limits from the file's size on disk (a gzip file counts GZIP_SCALE times): never from its content."""
    with open(path, "rb") as handle:
        scaled = size * GZIP_SCALE if handle.read(2) == b"\x1f\x8b" else size
    timeout = BASE_TIMEOUT_S + TIMEOUT_S_PER_MB * scaled / 1e6
    return Limits(timeout_s=timeout, memory_bytes=BASE_MEMORY_BYTES + MEMORY_PER_BYTE * scaled,
                  cpu_seconds=int(2 * timeout) + 1, output_bytes=BASE_OUTPUT_BYTES + OUTPUT_PER_BYTE * scaled)


# ---------------------------------------------------------------- parent


_reported_layers: set[tuple[str, ...]] = set()


def _report_layers(layers: list[str]) -> None:
    key = tuple(layers)
    if key in _reported_layers:
        return
    _reported_layers.add(key)
    if any(layer.startswith(KERNEL_LAYERS) for layer in layers):
        LOGGER.info("pickle sandbox active: %s", ", ".join(layers))
    else:
        LOGGER.warning(
            "pickle sandbox: neither Landlock nor seccomp is available here, so untrusted pickles are held "
            "only by the allow-list and resource limits (%s); see docs/security.md", ", ".join(layers)
        )


# The child runs this. It needs none of the Luigi tasks that pipeline/__init__.py imports
# (a third of its start-up time), so it registers the package by its path and imports
# only the modules the job uses.
_CHILD_BOOTSTRAP = """# the pipeline.untrusted.sandbox child
import sys, types
package = types.ModuleType("pipeline")
package.__path__ = [sys.argv[1]]
sys.modules["pipeline"] = package
import importlib
importlib.import_module(sys.argv[2])._child_main(sys.argv[3:])
"""
# The module whose _child_main the child runs. Only tests change it (in-process, to drive a
# deliberately compromised child, tests/helpers/compromised_child.py); no file or setting can.
_CHILD_MODULE = "pipeline.untrusted.sandbox"


class _Request(NamedTuple):
    path: Path
    job: SandboxJob
    limits: Limits
    source_fd: int  # the pickle, opened by the parent
    out_fd: int  # the parent's read end of this worker's output pipe
    worker_out_fd: int  # the write end, for the worker


def load(path: str | os.PathLike, job: SandboxJob) -> tuple[dict[str, pd.DataFrame], dict]:
    """Load `path` in the sandbox; returns ({frame name: DataFrame}, info) as `job` declares."""
    return load_many([(path, job)])[0]


def load_many(requests: list[tuple[str | os.PathLike, SandboxJob]]) -> list[tuple[dict[str, pd.DataFrame], dict]]:
    """Load several files at once: one child imports once and forks a confined worker per file."""
    from pipeline.untrusted.unpickler import open_pickle

    opened: list[_Request] = []
    receivers: list[_Receiver] = []
    try:
        for path, job in requests:
            handle, size = open_pickle(Path(path), str(path), job.expected)
            read_end, write_end = os.pipe()
            _widen_pipe(read_end)
            opened.append(_Request(Path(path), job, limits_for(Path(path), size), os.dup(handle.fileno()),
                                   read_end, write_end))
            handle.close()
        process = _start(opened)
        for request in opened:  # the child has its own copies now
            os.close(request.source_fd)
            os.close(request.worker_out_fd)
        receivers = [_Receiver(request) for request in opened]  # each owns (and closes) its read end
        outputs, stopped = _collect(process, opened, receivers)
        return [_finish(request, receiver, outputs, stopped, index)
                for index, (request, receiver) in enumerate(zip(opened, receivers))]
    finally:
        owned = {receiver.request.out_fd for receiver in receivers}
        for request in opened:
            for fd in (request.source_fd, request.worker_out_fd) + ((request.out_fd,) if request.out_fd not in owned
                                                                      else ()):
                try:
                    os.close(fd)
                except OSError:  # already closed
                    pass


_F_SETPIPE_SZ = 1031


def _widen_pipe(fd: int) -> None:
    # 1 MiB instead of 64 KiB: a frame of tens of MB crosses in far fewer wake-ups.
    try:
        import fcntl

        fcntl.fcntl(fd, _F_SETPIPE_SZ, 1 << 20)
    except (ImportError, OSError):  # not Linux, or above /proc/sys/fs/pipe-max-size
        pass


def _start(requests: list[_Request]) -> subprocess.Popen:
    spec = [{"module": r.job.module, "job": r.job.name, "source": r.source_fd, "out": r.worker_out_fd,
             "name": str(r.path), "memory": r.limits.memory_bytes, "cpu": r.limits.cpu_seconds} for r in requests]
    command = [sys.executable, "-c", _CHILD_BOOTSTRAP, str(Path(__file__).parent.parent), _CHILD_MODULE,
               json.dumps(spec)]
    fds = [fd for r in requests for fd in (r.source_fd, r.worker_out_fd)]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            pass_fds=fds, env=_child_environment())


# The child gets no secrets from the environment (tokens, keys): only what Python and the
# project read. DIN_ covers the project's own switches (and the tests' audit log).
_CHILD_ENV_PREFIXES = ("PYTHON", "LANG", "LC_", "TZ", "DIN_")


def _child_environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key.startswith(_CHILD_ENV_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the modules this process sees
    return env


def _finish(request: _Request, receiver: "_Receiver", outputs: dict, stopped: str | None,
            index: int) -> tuple[dict, dict]:
    path, job, limits = request.path, request.job, request.limits
    if stopped:
        raise InputError(f"{path}: {stopped} in the pickle sandbox, so it was stopped: expected {job.expected}")
    if receiver.over_budget:
        raise InputError(f"{path}: it produced more than {limits.output_bytes} bytes of data in the pickle sandbox, "
                         f"so it was stopped: expected {job.expected}")
    returncode = outputs["returncodes"].get(index, outputs["child_returncode"] or -signal.SIGKILL)
    header = receiver.header
    if returncode != 0:
        raise InputError(f"{path}: {_describe_exit(returncode, limits, outputs['stderr'])}: expected {job.expected}")
    if header is None:
        raise InputError(f"{path}: the pickle sandbox exited normally but its reply did not start with one line of "
                         f"UTF-8 JSON object (the header), so it was refused: expected {job.expected}")
    _report_layers(_strings(header.get("layers"), path))
    if not header.get("ok"):
        raise InputError(_one_line(str(header.get("error", "the pickle sandbox failed"))))
    if receiver.error is not None:
        raise receiver.error
    return receiver.frames, _read_info(header.get("info"), job, path)


class _Receiver(threading.Thread):
    """Reads one worker's reply as it arrives: a JSON header line, then one Arrow IPC stream per frame.

    Nothing is buffered whole: each IPC message is read, counted against the
    output cap and checked (no compressed bodies, at most one record batch per
    frame, decoded bytes counted too) before the next, so the parent's memory
    stays within the cap whatever the child sends. The read end is closed when
    done, so a worker still writing gets EPIPE instead of blocking.
    """

    def __init__(self, request: _Request):
        super().__init__(daemon=True)
        self.request = request
        self.source = _PipeSource(request.out_fd, request.limits.output_bytes)
        self.header: dict | None = None
        self.frames: dict[str, pd.DataFrame] = {}
        self.error: InputError | None = None
        self.over_budget = False
        self.start()

    def run(self) -> None:
        path, job = self.request.path, self.request.job
        try:
            self.header = _parse_header(self.source.read_line(MAX_HEADER_BYTES))
            if self.header is not None and self.header.get("ok"):
                self.frames = {name: _checked_frame(self.source, columns, path, name)
                               for name, columns in job.frames.items()}
                if self.source.read(1):
                    raise InputError(f"{path}: the pickle sandbox sent more data than the frames it declared")
        except _OverBudget:
            self.over_budget = True
        except InputError as error:
            self.error = error
        except Exception as error:  # noqa: BLE001  (anything the child's bytes make a reader raise)
            self.error = InputError(f"{path}: the pickle sandbox sent unreadable data "
                                    f"({type(error).__name__}: {_one_line(str(error), 200)})")
        finally:
            os.close(self.request.out_fd)


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


def _collect(process: subprocess.Popen, requests: list[_Request],
             receivers: list[_Receiver]) -> tuple[dict, str | None]:
    """Wait for the child and its readers; stop it at the time limit or when a reader hits the output cap.

    Returns ({"stderr": last bytes, "returncodes": {worker index: code}, "child_returncode": code}, stopped).
    """
    timeout = max(r.limits.timeout_s for r in requests)
    deadline = time.monotonic() + timeout
    stderr = _Tail(process.stderr.fileno(), MAX_STDERR_BYTES)
    status = _Tail(process.stdout.fileno(), MAX_HEADER_BYTES)
    stopped = None
    while True:
        if any(receiver.over_budget for receiver in receivers):
            break
        try:
            process.wait(timeout=min(0.05, max(deadline - time.monotonic(), 0.0)))
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                stopped = f"loading it took longer than {timeout:.0f} s"
                break
    if stopped is not None or process.poll() is None:
        process.kill()  # its workers die with it (PR_SET_PDEATHSIG)
    process.wait()
    for thread in receivers + [stderr, status]:
        thread.join(max(deadline - time.monotonic(), 0.0) + 5.0)
        if thread.is_alive() and stopped is None:  # a descendant still holds the pipe open
            stopped = f"loading it took longer than {timeout:.0f} s"
    process.stdout.close()
    process.stderr.close()
    outputs = {"stderr": bytes(stderr.data), "returncodes": _worker_returncodes(bytes(status.data)),
               "child_returncode": process.returncode}
    return outputs, stopped


class _Tail(threading.Thread):
    """The last `keep` bytes of a pipe, read to its end."""

    def __init__(self, fd: int, keep: int):
        super().__init__(daemon=True)
        self.fd, self.keep, self.data = fd, keep, bytearray()
        self.start()

    def run(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            self.data += chunk
            del self.data[:-self.keep]


def _worker_returncodes(status: bytes) -> dict[int, int]:
    codes = {}
    for line in status.decode("utf-8", "replace").splitlines()[:64]:
        try:
            record = json.loads(line)
            codes[int(record["index"])] = int(record["returncode"])
        except (ValueError, KeyError, TypeError, RecursionError):
            continue
    return codes


def _describe_exit(returncode: int, limits: Limits, err: bytes) -> str:
    if returncode < 0:
        number = -returncode
        name = signal.Signals(number).name if number in signal.Signals.__members__.values() else str(number)
        if number == signal.SIGXCPU:
            return f"loading it used more than {limits.cpu_seconds} CPU seconds, the pickle sandbox's limit"
        if number == signal.SIGKILL:
            return f"the pickle sandbox process was killed (SIGKILL: memory or CPU limit, {limits.memory_bytes} bytes)"
        return f"loading it crashed the pickle sandbox process ({name}): the file is corrupt or crafted"
    last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
    return f"the pickle sandbox process failed (exit {returncode}: {_one_line(last[0], 300)})"


def _one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    text = printable(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


_LAYER_NAME = re.compile(r"[a-z0-9-]{1,40}\Z")


def _strings(value: Any, path: Path) -> list[str]:
    if not (isinstance(value, list) and len(value) < 10
            and all(isinstance(v, str) and _LAYER_NAME.match(v) for v in value)):
        raise InputError(f"{path}: the pickle sandbox sent a malformed header")
    return value


def _checked_frame(source: _PipeSource, columns: dict[str, str], path: Path, name: str) -> pd.DataFrame:
    """The next Arrow IPC stream from the child, read message by message and checked, as a DataFrame."""
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
            source.take(batch.nbytes)  # decoded bytes count too
            batches.append(batch)
        table = pa.Table.from_batches(batches, schema)
        table.validate(full=True)
    except (pa.ArrowException, ValueError, OSError, StopIteration, struct.error) as error:
        raise InputError(f"{path}: the pickle sandbox sent unreadable {name} data ({_one_line(str(error), 200)})") \
            from None
    for column in columns:
        if table.column(column).null_count:
            raise InputError(f"{path}: the pickle sandbox sent {name} column {column} "
                             f"with {table.column(column).null_count} nulls, expected no nulls")
    # Built column by column from the Arrow data (text zero-copy where pandas allows), so nothing
    # in the child's stream (no pandas metadata) decides what the parent builds.
    return pd.DataFrame({
        column: pd.Series(table.column(column), dtype=TEXT_DTYPE) if kind == "str" else table.column(column).to_numpy()
        for column, kind in columns.items()
    })


def _messages(reader: Any):
    while True:
        try:
            yield reader.read_next_message()
        except StopIteration:
            return


def _check_schema(schema: pa.Schema, columns: dict[str, str], path: Path, name: str) -> None:
    if schema.names != list(columns):
        shown = _one_line(str(schema.names[:10]), 300)
        raise InputError(f"{path}: the pickle sandbox sent {name} columns {shown}, expected {list(columns)}")
    for column, kind in columns.items():
        field = schema.field(column)
        if not _ARROW_KINDS[kind](field.type):
            raise InputError(f"{path}: the pickle sandbox sent {name} column {column} as "
                             f"{_one_line(str(field.type), 100)}, expected {kind} without nulls")


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


def _read_info(info: Any, job: SandboxJob, path: Path) -> dict:
    if not (isinstance(info, dict) and set(info) == set(job.info_keys)
            and all(type(v) is int and 0 <= v < 1 << 63 for v in info.values())):
        raise InputError(f"{path}: the pickle sandbox sent malformed counts")
    return {key: info[key] for key in job.info_keys}


# ---------------------------------------------------------------- child


def _write_ipc(out: Any, frame: pd.DataFrame, columns: dict[str, str]) -> None:
    # Arrays only, no pandas metadata: the parent builds its frames from the declared columns.
    # One record batch per frame, uncompressed: the parent refuses anything else.
    table = pa.Table.from_arrays([pa.array(frame[column], from_pandas=True) for column in columns],
                                 names=list(columns)).combine_chunks()
    with pa.ipc.new_stream(out, table.schema) as writer:
        for batch in table.to_batches():  # one after combine_chunks (an empty table may have none)
            writer.write_batch(batch)


def _run_job(job: SandboxJob, source: Any, name: str) -> tuple[dict, dict]:
    """(header, frames) for the pickle in `source`."""
    from pipeline.untrusted.unpickler import safe_load

    objects = safe_load(source, n_objects=job.n_objects, expected=job.expected, name=name)
    frames, info = job.check(objects if job.n_objects > 1 else [objects], name)
    return {"ok": True, "info": info}, frames


def _send(out: Any, header: dict, frames: dict, job: SandboxJob) -> None:
    out.write(json.dumps(header).encode("utf-8") + b"\n")
    for frame, columns in job.frames.items() if frames else ():
        _write_ipc(out, frames[frame], columns)
    out.flush()


def _warm_up(job: SandboxJob) -> None:
    """Run samples of every supported flavour through the job, so lazy imports happen before confinement."""
    for objects in job.sample():
        for protocol in (2, pickle.HIGHEST_PROTOCOL):
            data = b"".join(pickle.dumps(obj, protocol) for obj in objects)
            _send(pa.BufferOutputStream(), *_run_job(job, io.BytesIO(data), "warm-up sample"), job)
    try:  # the error path too
        _run_job(job, io.BytesIO(pickle.dumps([1], 2)), "warm-up sample")
    except InputError:
        pass


def _child_error(error: BaseException, name: str, memory_bytes: int) -> str:
    if isinstance(error, InputError):
        return error.message
    if isinstance(error, MemoryError):
        return f"{name} needs more than the pickle sandbox's {memory_bytes} bytes of memory to load"
    if isinstance(error, PermissionError):
        return f"{name} made the loader reach outside the pickle sandbox (a file, program or network), which it forbids"
    return f"{name} could not be loaded ({type(error).__name__}: {_one_line(str(error), 200)})"


_PR_SET_PDEATHSIG = 1


def _child_main(argv: list[str]) -> None:
    """The child: import once, then fork one worker per file and report how each ended (on stdout)."""
    requests = json.loads(argv[0])
    from pipeline.untrusted import confine  # noqa: F401  (loads libseccomp before any fork)

    jobs = [importlib.import_module(r["module"]).SANDBOX_JOBS[r["job"]] for r in requests]
    # Warmed up once, here: the workers inherit it (warming up starts no thread, so forking stays safe).
    for job in {job.name: job for job in jobs}.values():
        _warm_up(job)
    workers = {}
    for index, (request, job) in enumerate(zip(requests, jobs)):
        request["child_pid"] = os.getpid()
        pid = os.fork()
        if pid == 0:
            _worker(request, job, [fd for other in requests if other is not request
                                   for fd in (other["source"], other["out"])])
        workers[pid] = index
    for request in requests:
        os.close(request["source"])
        os.close(request["out"])
    status = os.fdopen(1, "w")
    while workers:
        pid, code = os.wait()
        returncode = -os.WTERMSIG(code) if os.WIFSIGNALED(code) else os.WEXITSTATUS(code)
        status.write(json.dumps({"index": workers.pop(pid), "returncode": returncode}) + "\n")
        status.flush()
    os._exit(0)


def _worker(request: dict, job: SandboxJob, others: list[int]) -> None:
    """One file: confine, read, check, send; never returns."""
    import ctypes

    code = 1
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the child (timeouts)
        if os.getppid() != request["child_pid"]:  # the child died before that
            return
        for fd in others + [1]:  # other files' descriptors, and the status pipe: never forged
            os.close(fd)
        from pipeline.untrusted import confine

        source = os.fdopen(request["source"], "rb")
        out = pa.PythonFile(os.fdopen(request["out"], "wb", buffering=0), mode="w")
        os.close(0)
        name, memory = request["name"], int(request["memory"])
        layers = confine.confine(memory, int(request["cpu"]))
        try:
            header, frames = _run_job(job, source, name)
        except Exception as error:  # every failure becomes one message for the parent
            header, frames = {"ok": False, "error": _one_line(_child_error(error, name, memory))}, {}
        header["layers"] = layers
        _send(out, header, frames, job)
        code = 0
    finally:
        os._exit(code)  # skip freeing the loaded objects one by one

