"""Loading an untrusted pickle in a child process that can only compute (layer 1; see docs/security.md).

This module owns both ends of the sandbox:
  * the parent, `load(path, job)`: opens the file itself, starts
    `python -m pipeline.pickle_sandbox` with only that open file descriptor,
    stdin closed and stdout/stderr as pipes, waits with a wall-clock timeout
    and an output cap, and turns a crash, a hang or a limit hit into one
    InputError naming the file. What comes back is a JSON header and Arrow IPC
    streams, never a pickle: the parent checks the schema (exact columns and
    types), the values (no nulls, Arrow's full validation) and the info dict.
  * the child, `_child_main`: imports and warms up everything first (a
    sample of the job's data goes through the same path, so pandas/pyarrow's
    lazy imports happen now), closes stdin, then `sandbox_confine.confine`
    (resource limits, Landlock, seccomp), and only then reads the first
    opcode with `safe_load` (layer 2) and runs the job's check in the child.
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


class _Started(NamedTuple):
    path: Path
    job: SandboxJob
    limits: Limits
    deadline: float
    process: subprocess.Popen


def load(path: str | os.PathLike, job: SandboxJob) -> tuple[dict[str, pd.DataFrame], dict]:
    """Load `path` in a sandbox child; returns ({frame name: DataFrame}, info) as `job` declares."""
    return load_many([(path, job)])[0]


def load_many(requests: list[tuple[str | os.PathLike, SandboxJob]]) -> list[tuple[dict[str, pd.DataFrame], dict]]:
    """Load several files, each in its own sandbox child, all started at once (their start-up overlaps)."""
    started: list[_Started] = []
    try:
        for path, job in requests:
            started.append(_start(Path(path), job))
        return [_finish(one) for one in started]
    finally:
        for one in started:
            if one.process.poll() is None:
                one.process.kill()
                one.process.wait()


def _start(path: Path, job: SandboxJob) -> _Started:
    from pipeline.safe_pickle import open_pickle

    handle, size = open_pickle(path, str(path), job.expected)
    with handle:
        limits = limits_for(path, size)
        command = [sys.executable, "-m", "pipeline.pickle_sandbox", job.module, job.name, str(handle.fileno()),
                   str(path), str(limits.memory_bytes), str(limits.cpu_seconds)]
        env = _child_environment()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, pass_fds=(handle.fileno(),), env=env)
    return _Started(path, job, limits, time.monotonic() + limits.timeout_s, process)


# The child gets no secrets from the environment (tokens, keys): only what Python and the
# project read. DIN_ covers the project's own switches (and the tests' audit log).
_CHILD_ENV_PREFIXES = ("PYTHON", "LANG", "LC_", "TZ", "DIN_")


def _child_environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key.startswith(_CHILD_ENV_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the modules this process sees
    return env


def _finish(started: _Started) -> tuple[dict[str, pd.DataFrame], dict]:
    path, job, limits, process = started.path, started.job, started.limits, started.process
    out, err, stopped = _collect(process, limits, started.deadline)
    if stopped:
        raise InputError(f"{path}: {stopped} in the pickle sandbox, so it was stopped: expected {job.expected}")
    header, payload = _split_header(out)
    if process.returncode != 0 or header is None:
        raise InputError(f"{path}: {_describe_exit(process.returncode, limits, err)}: expected {job.expected}")
    _report_layers(_strings(header.get("layers"), path))
    if not header.get("ok"):
        raise InputError(_one_line(str(header.get("error", "the pickle sandbox failed"))))
    return _read_frames(payload, job, path), _read_info(header.get("info"), job, path)


def _collect(process: subprocess.Popen, limits: Limits, deadline: float) -> tuple[bytes, bytes, str | None]:
    """Read the child's stdout/stderr until it exits; stop it at the time or output limit."""
    out_fd, err_fd = process.stdout.fileno(), process.stderr.fileno()
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    total, stopped = 0, None
    with selectors.DefaultSelector() as selector:
        for stream in (process.stdout, process.stderr):
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map() and stopped is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stopped = f"loading it took longer than {limits.timeout_s:.0f} s"
                break
            for key, _ in selector.select(timeout=remaining):
                data = os.read(key.fd, 1 << 20)
                if not data:
                    selector.unregister(key.fileobj)
                    continue
                chunks[key.fd].append(data)
                total += len(data)
                if total > limits.output_bytes:
                    stopped = f"it produced more than {limits.output_bytes} bytes of data"
    if stopped is not None:
        process.kill()
    process.wait()
    process.stdout.close()
    process.stderr.close()
    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd]), stopped


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
    frame = table.replace_schema_metadata(None).to_pandas()
    for column, kind in columns.items():
        if kind == "str":
            frame[column] = frame[column].astype("str")
    return frame


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


def _child_main(argv: list[str]) -> None:
    module, job_name, fd, name, memory_bytes, cpu_seconds = argv
    from pipeline import sandbox_confine

    job = importlib.import_module(module).SANDBOX_JOBS[job_name]
    source = os.fdopen(int(fd), "rb")
    _warm_up(job)
    os.close(0)
    layers = sandbox_confine.confine(int(memory_bytes), int(cpu_seconds))
    try:
        header, frames = _run_job(job, source, name)
    except Exception as error:  # every failure becomes one message for the parent
        header, frames = {"ok": False, "error": _one_line(_child_error(error, name, int(memory_bytes)))}, {}
    header["layers"] = layers
    _send(pa.PythonFile(os.fdopen(1, "wb", buffering=0), mode="w"), header, frames, job)
    os._exit(0)  # skip freeing the loaded objects one by one


if __name__ == "__main__":
    _child_main(sys.argv[1:])
