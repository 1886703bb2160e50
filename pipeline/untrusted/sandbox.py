"""Loading an untrusted pickle in a child process that can only compute (layer 1; see docs/security.md).

This module owns both ends of the sandbox:
  * the parent, `load(path, job)`: opens the file itself, starts
    one child process (`_CHILD_BOOTSTRAP`) with only the open file
    descriptors and an output pipe per file, stdin closed, and the reply reader
    (`pipeline.untrusted.reply`) with the pipes' other ends and one unnamed scratch file per
    frame; waits for both with a wall-clock timeout, and turns a crash, a hang or a
    limit hit into one InputError naming the file. What the worker sends is a JSON header and one
    uncompressed Arrow record batch per frame, never a pickle; the reader, a process with an
    address-space limit of its own, reads and checks it (counted against an output cap) and
    leaves the checked frames in the scratch files, which the parent maps (size checked
    first) and checks again, escaping whatever text came from the child. It imports pandas (for
    the frames) only once the child and the reader are started, so that the import runs while the
    child starts (its own start-up is mostly importing pandas); the parent's side of this module
    imports no pandas before that (`open_pickle` is in pipeline.untrusted.files).
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
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa

from din_common.errors import InputError
from pipeline.compat import text_dtype
from pipeline.untrusted import reply
from pipeline.untrusted.escape import one_line
from pipeline.untrusted.files import open_pickle
from pipeline.untrusted.job import SandboxJob

if TYPE_CHECKING:
    import pandas as pd

LOGGER = logging.getLogger("luigi-interface")
# Limits, each scaled with the file: the pure-Python unpickler's time grows with the opcodes it
# reads, and a data frame needs a few times its pickle in memory (docs/security.md, "Limits").
BASE_TIMEOUT_S, TIMEOUT_S_PER_MB = 120.0, 1.0
BASE_MEMORY_BYTES, MEMORY_PER_BYTE = 3 << 30, 16
BASE_OUTPUT_BYTES, OUTPUT_PER_BYTE = 64 << 20, 4
# The reply reader's memory above what it holds once started (docs/security.md, "Limits"): room for a
# reply at the output cap, which it holds about twice while it checks and writes it.
READER_BASE_MEMORY_BYTES, READER_MEMORY_PER_BYTE = 256 << 20, 8
# A gzip pickle's limits count it as this many times its size (about what data pickles
# compress by, docs/security.md); the size its trailer claims is the writer's word, not ours.
GZIP_SCALE = 4
MAX_STDERR_BYTES = 1 << 14
KERNEL_LAYERS = ("landlock", "seccomp")


class Limits(NamedTuple):
    timeout_s: float
    memory_bytes: int
    cpu_seconds: int
    output_bytes: int
    reader_memory_bytes: int  # the reply reader's, above its start-up size


def limits_for(path: Path, size: int) -> Limits:
    """Limits from the file's size on disk (a gzip file counts GZIP_SCALE times): never from its content."""
    with open(path, "rb") as handle:
        scaled = size * GZIP_SCALE if handle.read(2) == b"\x1f\x8b" else size
    timeout = BASE_TIMEOUT_S + TIMEOUT_S_PER_MB * scaled / 1e6
    return Limits(timeout_s=timeout, memory_bytes=BASE_MEMORY_BYTES + MEMORY_PER_BYTE * scaled,
                  cpu_seconds=int(2 * timeout) + 1, output_bytes=BASE_OUTPUT_BYTES + OUTPUT_PER_BYTE * scaled,
                  reader_memory_bytes=READER_BASE_MEMORY_BYTES + READER_MEMORY_PER_BYTE * scaled)


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
# The reply reader runs it too, without numpy where pyarrow allows (>= 16): importing numpy is
# most of the reader's start-up, and nothing it does needs numpy (docs/security.md, "Cost").
_READER_BOOTSTRAP = (_CHILD_BOOTSTRAP.replace("import sys, types\n", "import sys, types\nsys.modules['numpy'] = None\n")
                     if int(pa.__version__.split(".")[0]) >= 16 else _CHILD_BOOTSTRAP)
# The module whose _child_main the child runs. Only tests change it (in-process, to drive a
# deliberately compromised child, tests/helpers/compromised_child.py); no file or setting can.
_CHILD_MODULE = "pipeline.untrusted.sandbox"


class _Request(NamedTuple):
    path: Path
    job: SandboxJob
    limits: Limits
    source_fd: int  # the pickle, opened by the parent
    out_fd: int  # the read end of this worker's output pipe, for the reply reader
    worker_out_fd: int  # the write end, for the worker
    scratch: dict[str, IO[bytes]]  # frame name -> unnamed file the reply reader writes it into


def load(path: str | os.PathLike, job: SandboxJob) -> tuple[dict[str, pd.DataFrame], dict]:
    """Load `path` in the sandbox; returns ({frame name: DataFrame}, info) as `job` declares."""
    return load_many([(path, job)])[0]


def load_many(requests: list[tuple[str | os.PathLike, SandboxJob]]) -> list[tuple[dict[str, pd.DataFrame], dict]]:
    """Load several files at once: one child imports once and forks a confined worker per file.

    Their replies are read by one reply reader (`pipeline.untrusted.reply`), a process with an
    address-space limit of its own; this process only maps the checked frames it leaves.
    """
    opened: list[_Request] = []
    fds = _Descriptors()
    try:
        for path, job in requests:
            handle, size = open_pickle(Path(path), str(path), job.expected)
            with handle:
                source_fd = fds.add(os.dup(handle.fileno()))
            read_end, write_end = (fds.add(fd) for fd in os.pipe())
            _widen_pipe(read_end)
            scratch = {frame: tempfile.TemporaryFile(prefix="din-reply-") for frame in job.frames}
            opened.append(_Request(Path(path), job, limits_for(Path(path), size), source_fd, read_end, write_end,
                                   scratch))
        process = _start(opened)
        fds.close(*(fd for request in opened for fd in (request.source_fd, request.worker_out_fd)))
        reader = _start_reader(opened)
        fds.close(*(request.out_fd for request in opened))  # the reader's alone now: it gets EOF, a worker EPIPE
        # pandas, for `_frame`, imported now and not before: the child's start-up (~0.4 s, mostly its
        # own import of pandas) and this import then run at once, on two cores (docs/performance.md).
        text_dtype()
        outputs, stopped = _collect(process, reader, opened)
        return [_finish(request, outputs, stopped, index) for index, request in enumerate(opened)]
    finally:
        fds.close(*fds.open)
        for request in opened:
            for scratch in request.scratch.values():
                scratch.close()  # unnamed: nothing stays on disk once the last mapping of it goes


class _Descriptors:
    """File descriptors this process opened for a load, each closed once."""

    def __init__(self):
        self.open: list[int] = []

    def add(self, fd: int) -> int:
        self.open.append(fd)
        return fd

    def close(self, *fds: int) -> None:
        for fd in fds:
            if fd in self.open:
                self.open.remove(fd)
                os.close(fd)


_F_SETPIPE_SZ = 1031


def _widen_pipe(fd: int) -> None:
    # 1 MiB instead of 64 KiB: a frame of tens of MB crosses in far fewer wake-ups.
    try:
        import fcntl

        fcntl.fcntl(fd, _F_SETPIPE_SZ, 1 << 20)
    except (ImportError, OSError):  # not Linux, or above /proc/sys/fs/pipe-max-size
        pass


def _python_command(module: str, argument: str, bootstrap: str = _CHILD_BOOTSTRAP) -> list[str]:
    return [sys.executable, "-c", bootstrap, str(Path(__file__).parent.parent), module, argument]


def _start(requests: list[_Request]) -> subprocess.Popen:
    spec = [{"module": r.job.module, "job": r.job.name, "source": r.source_fd, "out": r.worker_out_fd,
             "name": str(r.path), "memory": r.limits.memory_bytes, "cpu": r.limits.cpu_seconds} for r in requests]
    fds = [fd for r in requests for fd in (r.source_fd, r.worker_out_fd)]
    return subprocess.Popen(_python_command(_CHILD_MODULE, json.dumps(spec)), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=fds, env=_child_environment())


def _start_reader(requests: list[_Request]) -> subprocess.Popen:
    spec = {"memory": _reader_memory(requests), "cpu": max(r.limits.cpu_seconds for r in requests), "files": [
        {"name": str(r.path), "pipe": r.out_fd, "scratch": {frame: f.fileno() for frame, f in r.scratch.items()},
         "frames": r.job.frames, "info_keys": list(r.job.info_keys), "output_bytes": r.limits.output_bytes}
        for r in requests]}
    fds = [fd for r in requests for fd in [r.out_fd] + [f.fileno() for f in r.scratch.values()]]
    return subprocess.Popen(_python_command("pipeline.untrusted.reply", json.dumps(spec), _READER_BOOTSTRAP),
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=fds, env=_child_environment())


def _reader_memory(requests: list[_Request]) -> int:
    # It reads one reply at a time: the largest file's allowance is enough.
    return max(r.limits.reader_memory_bytes for r in requests)


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
    result = outputs["results"].get(index)
    status = result["status"] if result else None
    if status == reply.OVER_BUDGET:
        raise InputError(f"{path}: it produced more than {limits.output_bytes} bytes of data in the pickle sandbox, "
                         f"so it was stopped: expected {job.expected}")
    reader_code = outputs["reader_returncode"]
    if status == reply.OVER_MEMORY:
        raise InputError(f"{path}: reading its reply from the pickle sandbox needed more than the "
                         f"{outputs['reader_memory']} bytes of memory the reply reader may use (its address-space "
                         f"limit), so it was stopped: expected {job.expected}")
    if result is None and reader_code < 0:
        raise InputError(f"{path}: reading its reply from the pickle sandbox stopped the reply reader "
                         f"({_signal_name(-reader_code)}) at its limits ({outputs['reader_memory']} bytes of memory, "
                         f"{limits.cpu_seconds} CPU seconds), so it was refused: expected {job.expected}")
    returncode = outputs["returncodes"].get(index, outputs["child_returncode"] or -signal.SIGKILL)
    if returncode != 0:
        raise InputError(f"{path}: {_describe_exit(returncode, limits, outputs['stderr'])}: expected {job.expected}")
    if result is None:
        raise InputError(f"{path}: the pickle sandbox's reply reader ended without reading its reply (exit "
                         f"{reader_code}: {_last_line(outputs['reader_stderr'])}): expected {job.expected}")
    if status == reply.NO_HEADER:
        raise InputError(f"{path}: the pickle sandbox exited normally but its reply did not start with one line of "
                         f"UTF-8 JSON object (the header), so it was refused: expected {job.expected}")
    if status != reply.UNREADABLE:
        _report_layers(reply.layer_names(result.get("layers"), path))
    if status != reply.OK:
        raise InputError(one_line(str(result.get("error", "the pickle sandbox failed"))))
    frames = {name: _frame(reply.mapped_table(request.scratch[name].fileno(), columns, limits.output_bytes, path,
                                              name), columns)
              for name, columns in job.frames.items()}
    return frames, reply.read_info(result.get("info"), job.info_keys, path)


def _frame(table: pa.Table, columns: dict[str, str]) -> pd.DataFrame:
    # Built column by column from the Arrow data (text zero-copy where pandas allows), so nothing
    # in the child's stream (no pandas metadata) decides what the parent builds.
    import pandas as pd

    return pd.DataFrame({
        column: pd.Series(table.column(column), dtype=text_dtype()) if kind == "str" else table.column(column).to_numpy()
        for column, kind in columns.items()
    })


def _collect(process: subprocess.Popen, reader: subprocess.Popen,
             requests: list[_Request]) -> tuple[dict, str | None]:
    """Wait for the child and the reply reader; stop both at the time limit, the child when a reply went over a limit.

    Returns ({"stderr": the child's last bytes, "returncodes": {worker index: code}, "child_returncode": code,
    "results": {index: the reader's record}, "reader_returncode": code, "reader_stderr", "reader_memory"}, stopped).
    """
    timeout = max(r.limits.timeout_s for r in requests)
    deadline = time.monotonic() + timeout
    tails = {"stderr": _Tail(process.stderr.fileno(), MAX_STDERR_BYTES),
             "status": _Tail(process.stdout.fileno(), reply.MAX_HEADER_BYTES),
             "results": _Tail(reader.stdout.fileno(), reply.MAX_HEADER_BYTES),
             "reader_stderr": _Tail(reader.stderr.fileno(), MAX_STDERR_BYTES)}
    stopped = None
    while True:
        running = [p for p in (process, reader) if p.poll() is None]
        # A reply past a limit (or a reader that died) ends the load: the child is stopped, as
        # the workers' exit status would only say that their pipe was closed.
        if not running or reader.returncode not in (None, 0, reply.STOPPED):
            break
        try:
            running[0].wait(timeout=min(0.05, max(deadline - time.monotonic(), 0.0)))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                stopped = f"loading it took longer than {timeout:.0f} s"
                break
    for each in (process, reader):
        if each.poll() is None:
            each.kill()  # the child's workers die with it (PR_SET_PDEATHSIG)
        each.wait()
    for thread in tails.values():
        thread.join(max(deadline - time.monotonic(), 0.0) + 5.0)
        if thread.is_alive() and stopped is None:  # a descendant still holds the pipe open
            stopped = f"loading it took longer than {timeout:.0f} s"
    for pipe in (process.stdout, process.stderr, reader.stdout, reader.stderr):
        pipe.close()
    data = {name: bytes(thread.data) for name, thread in tails.items()}
    outputs = {"stderr": data["stderr"], "returncodes": _worker_returncodes(data["status"]),
               "child_returncode": process.returncode, "results": reply.parse_results(data["results"], len(requests)),
               "reader_returncode": reader.returncode, "reader_stderr": data["reader_stderr"],
               "reader_memory": _reader_memory(requests)}
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


def _signal_name(number: int) -> str:
    return signal.Signals(number).name if number in signal.Signals.__members__.values() else str(number)


def _last_line(err: bytes) -> str:
    last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
    return one_line(last[0], 300)


def _describe_exit(returncode: int, limits: Limits, err: bytes) -> str:
    if returncode < 0:
        number = -returncode
        name = _signal_name(number)
        if number == signal.SIGXCPU:
            return f"loading it used more than {limits.cpu_seconds} CPU seconds, the pickle sandbox's limit"
        if number == signal.SIGKILL:
            return f"the pickle sandbox process was killed (SIGKILL: memory or CPU limit, {limits.memory_bytes} bytes)"
        return f"loading it crashed the pickle sandbox process ({name}): the file is corrupt or crafted"
    return f"the pickle sandbox process failed (exit {returncode}: {_last_line(err)})"


# ---------------------------------------------------------------- child


def _write_ipc(out: Any, frame: pd.DataFrame, columns: dict[str, str]) -> None:
    # Arrays only, no pandas metadata: the parent builds its frames from the declared columns.
    # One record batch per frame, uncompressed: the parent refuses anything else.
    reply.write_stream(out, pa.Table.from_arrays([pa.array(frame[column], from_pandas=True) for column in columns],
                                                 names=list(columns)).combine_chunks())


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
    return f"{name} could not be loaded ({type(error).__name__}: {one_line(str(error), 200)})"


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
            header, frames = {"ok": False, "error": one_line(_child_error(error, name, memory))}, {}
        header["layers"] = layers
        _send(out, header, frames, job)
        code = 0
    finally:
        os._exit(code)  # skip freeing the loaded objects one by one

