"""Loading an untrusted pickle in a child process that can only compute (layer 1; see docs/security.md).

This module owns both ends of the sandbox:
  * the parent, `load(path, job)`: opens the file itself, starts
    one child process (`_CHILD_BOOTSTRAP`) with only the open file
    descriptors and an output pipe per file, stdin closed; waits with a
    wall-clock timeout and an output cap, and turns a crash, a hang or a
    limit hit into one InputError naming the file. What comes back is a JSON header and Arrow IPC
    streams, never a pickle: the parent checks the schema (exact columns and
    types), the values (no nulls, Arrow's full validation) and the info dict.
  * the child, `_child_main`: imports once and forks one worker per file
    (their start-up is shared, their work runs in parallel), then reports
    how each worker ended. Before forking it warms up (a sample of each
    job's data goes through the same path, so pandas/pyarrow's lazy imports
    happen now). A worker closes stdin, confines itself (`sandbox_confine.confine`: resource
    limits, Landlock, seccomp), and only then reads the first opcode with
    `safe_load` (layer 2) and runs the job's check.
A `SandboxJob` says what a file must hold: it is defined next to its checks
(`pipeline.raw_sources.SANDBOX_JOBS`) and found by name in the child.
"""
from __future__ import annotations

import importlib
import io
import json
import logging
import os
import pickle
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.ipc

from din_common.errors import InputError
from pipeline.compat import TEXT_DTYPE

LOGGER = logging.getLogger("luigi-interface")
# Limits, each scaled with the file: the pure-Python unpickler reads ~50 MB/s
# of dense opcodes, and a data frame needs a few times its pickle in memory.
BASE_TIMEOUT_S, TIMEOUT_S_PER_MB = 120.0, 1.0
BASE_MEMORY_BYTES, MEMORY_PER_BYTE = 3 << 30, 16
BASE_OUTPUT_BYTES, OUTPUT_PER_BYTE = 64 << 20, 4
MAX_HEADER_BYTES = 1 << 16
MAX_MESSAGE_CHARS = 1000
KERNEL_LAYERS = ("landlock", "seccomp")

# Column kinds a job may declare, and the Arrow types that carry them.
_ARROW_KINDS: dict[str, Callable[[pa.DataType], bool]] = {
    "str": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "int64": lambda t: t == pa.int64(),
}


class SandboxJob(NamedTuple):
    """What one kind of pickle must hold and how the child checks it."""

    name: str  # key in `<module>.SANDBOX_JOBS`
    module: str  # the module the child imports to find this job
    check: Callable[[list, str], tuple[dict, dict]]  # (objects, file name) -> (frames, info), in the child
    sample: Callable[[], list[list]]  # valid object lists, to warm the child up before it is confined
    n_objects: int
    expected: str
    frames: dict[str, dict[str, str]]  # frame name -> {column: "str" | "int64"}
    info_keys: tuple[str, ...]


class Limits(NamedTuple):
    timeout_s: float
    memory_bytes: int
    cpu_seconds: int
    output_bytes: int


def limits_for(path: Path, size: int) -> Limits:
    inflated = _inflated_size(path, size)
    timeout = BASE_TIMEOUT_S + TIMEOUT_S_PER_MB * inflated / 1e6
    return Limits(timeout_s=timeout, memory_bytes=BASE_MEMORY_BYTES + MEMORY_PER_BYTE * inflated,
                  cpu_seconds=int(2 * timeout) + 1, output_bytes=BASE_OUTPUT_BYTES + OUTPUT_PER_BYTE * inflated)


def _inflated_size(path: Path, size: int) -> int:
    """The file's size, or for gzip the size its trailer claims (capped as safe_pickle caps it)."""
    from pipeline.safe_pickle import MAX_INFLATION, MIN_CAP_BYTES

    with open(path, "rb") as handle:
        if handle.read(2) != b"\x1f\x8b" or size < 18:
            return size
        handle.seek(-4, os.SEEK_END)
        claimed = int.from_bytes(handle.read(4), "little")  # modulo 2**32
    return min(max(size, claimed), max(MIN_CAP_BYTES, size * MAX_INFLATION))


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
_CHILD_BOOTSTRAP = """
import sys, types
package = types.ModuleType("pipeline")
package.__path__ = [sys.argv[1]]
sys.modules["pipeline"] = package
from pipeline.pickle_sandbox import _child_main
_child_main(sys.argv[2:])
"""


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
    from pipeline.safe_pickle import open_pickle

    opened: list[_Request] = []
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
        outputs, stopped = _collect(process, opened)
        return [_finish(request, outputs, stopped, index) for index, request in enumerate(opened)]
    finally:
        for request in opened:
            for fd in (request.source_fd, request.out_fd, request.worker_out_fd):
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
    command = [sys.executable, "-c", _CHILD_BOOTSTRAP, str(Path(__file__).parent), json.dumps(spec)]
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


def _finish(request: _Request, outputs: dict, stopped: str | None, index: int) -> tuple[dict, dict]:
    path, job, limits = request.path, request.job, request.limits
    if stopped:
        raise InputError(f"{path}: {stopped} in the pickle sandbox, so it was stopped: expected {job.expected}")
    returncode = outputs["returncodes"].get(index, outputs["child_returncode"] or -signal.SIGKILL)
    header, payload = _split_header(outputs[request.out_fd])
    if returncode != 0 or header is None:
        raise InputError(f"{path}: {_describe_exit(returncode, limits, outputs['stderr'])}: expected {job.expected}")
    _report_layers(_strings(header.get("layers"), path))
    if not header.get("ok"):
        raise InputError(_one_line(str(header.get("error", "the pickle sandbox failed"))))
    return _read_frames(payload, job, path), _read_info(header.get("info"), job, path)


def _collect(process: subprocess.Popen, requests: list[_Request]) -> tuple[dict, str | None]:
    """Read every pipe of the child until it exits; stop it at the time or output limit.

    Returns {out fd: bytes, "stderr": bytes, "returncodes": {worker index: code}, "child_returncode": code}.
    """
    status_fd, err_fd = process.stdout.fileno(), process.stderr.fileno()
    chunks: dict[int, list[bytes]] = {fd: [] for fd in [status_fd, err_fd] + [r.out_fd for r in requests]}
    timeout = max(r.limits.timeout_s for r in requests)
    deadline, cap = time.monotonic() + timeout, sum(r.limits.output_bytes for r in requests)
    total, stopped = 0, None
    with selectors.DefaultSelector() as selector:
        for fd in chunks:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map() and stopped is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stopped = f"loading it took longer than {timeout:.0f} s"
                break
            for key, _ in selector.select(timeout=remaining):
                data = os.read(key.fd, 1 << 20)
                if not data:
                    selector.unregister(key.fd)
                    continue
                chunks[key.fd].append(data)
                total += len(data)
                if total > cap:
                    stopped = f"it produced more than {cap} bytes of data"
    if stopped is not None:
        process.kill()  # its workers die with it (PR_SET_PDEATHSIG)
    process.wait()
    process.stdout.close()
    process.stderr.close()
    outputs: dict = {fd: b"".join(parts) for fd, parts in chunks.items()}
    outputs["stderr"] = outputs.pop(err_fd)
    outputs["returncodes"] = _worker_returncodes(outputs.pop(status_fd))
    outputs["child_returncode"] = process.returncode
    return outputs, stopped


def _worker_returncodes(status: bytes) -> dict[int, int]:
    codes = {}
    for line in status.decode("utf-8", "replace").splitlines()[:64]:
        try:
            record = json.loads(line)
            codes[int(record["index"])] = int(record["returncode"])
        except (ValueError, KeyError, TypeError):
            continue
    return codes


def _split_header(out: bytes) -> tuple[dict | None, bytes]:
    end = out.find(b"\n", 0, MAX_HEADER_BYTES)
    if end < 0:
        return None, b""
    try:
        header = json.loads(out[:end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, b""
    return (header if isinstance(header, dict) else None), out[end + 1:]


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
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _strings(value: Any, path: Path) -> list[str]:
    if not (isinstance(value, list) and all(isinstance(v, str) and len(v) < 100 for v in value)):
        raise InputError(f"{path}: the pickle sandbox sent a malformed header")
    return value


def _read_frames(payload: bytes, job: SandboxJob, path: Path) -> dict[str, pd.DataFrame]:
    """One Arrow IPC stream per frame the job declares, back to back, and nothing after them."""
    reader = pa.BufferReader(pa.py_buffer(payload))
    frames = {name: _checked_frame(reader, columns, path, name) for name, columns in job.frames.items()}
    if reader.tell() != len(payload):
        raise InputError(f"{path}: the pickle sandbox sent more data than the frames it declared")
    return frames


def _checked_frame(reader: pa.BufferReader, columns: dict[str, str], path: Path, name: str) -> pd.DataFrame:
    """The next Arrow IPC stream from the child, checked column by column, as a DataFrame."""
    try:
        table = pa.ipc.open_stream(reader).read_all()
        table.validate(full=True)
    except (pa.ArrowException, ValueError, OSError) as error:
        raise InputError(f"{path}: the pickle sandbox sent unreadable {name} data ({_one_line(str(error), 200)})") \
            from None
    if table.schema.names != list(columns):
        raise InputError(f"{path}: the pickle sandbox sent {name} columns {table.schema.names[:10]}, "
                         f"expected {list(columns)}")
    for column, kind in columns.items():
        field = table.schema.field(column)
        if not _ARROW_KINDS[kind](field.type) or table.column(column).null_count:
            raise InputError(f"{path}: the pickle sandbox sent {name} column {column} as {field.type} "
                             f"with {table.column(column).null_count} nulls, expected {kind} without nulls")
    # Built column by column from the Arrow data (text zero-copy where pandas allows), so nothing
    # in the child's stream (no pandas metadata) decides what the parent builds.
    return pd.DataFrame({
        column: pd.Series(table.column(column), dtype=TEXT_DTYPE) if kind == "str" else table.column(column).to_numpy()
        for column, kind in columns.items()
    })


def _read_info(info: Any, job: SandboxJob, path: Path) -> dict:
    if not (isinstance(info, dict) and set(info) == set(job.info_keys)
            and all(type(v) is int and v >= 0 for v in info.values())):
        raise InputError(f"{path}: the pickle sandbox sent malformed counts")
    return {key: info[key] for key in job.info_keys}


# ---------------------------------------------------------------- child


def _write_ipc(out: Any, frame: pd.DataFrame, columns: dict[str, str]) -> None:
    # Arrays only, no pandas metadata: the parent builds its frames from the declared columns.
    table = pa.Table.from_arrays([pa.array(frame[column], from_pandas=True) for column in columns],
                                 names=list(columns))
    with pa.ipc.new_stream(out, table.schema) as writer:
        writer.write_table(table)


def _run_job(job: SandboxJob, source: Any, name: str) -> tuple[dict, dict]:
    """(header, frames) for the pickle in `source`."""
    from pipeline.safe_pickle import safe_load

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
    from pipeline import sandbox_confine  # noqa: F401  (loads libseccomp before any fork)

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
        from pipeline import sandbox_confine

        source = os.fdopen(request["source"], "rb")
        out = pa.PythonFile(os.fdopen(request["out"], "wb", buffering=0), mode="w")
        os.close(0)
        name, memory = request["name"], int(request["memory"])
        layers = sandbox_confine.confine(memory, int(request["cpu"]))
        try:
            header, frames = _run_job(job, source, name)
        except Exception as error:  # every failure becomes one message for the parent
            header, frames = {"ok": False, "error": _one_line(_child_error(error, name, memory))}, {}
        header["layers"] = layers
        _send(out, header, frames, job)
        code = 0
    finally:
        os._exit(code)  # skip freeing the loaded objects one by one

