"""Layer 1 on its own: what the sandbox child can't do even when code in it runs (tests/helpers/hostile_jobs.py)."""
from __future__ import annotations

import logging
import os
import pickle
import re
import signal
import socket
import tempfile
import threading

import pandas as pd
import pytest

from din_common.errors import InputError
from pipeline.raw.sandbox_jobs import SANDBOX_JOBS
from pipeline.untrusted import confine as sandbox_confine, reply, sandbox as pickle_sandbox
from tests.helpers.hostile_jobs import SANDBOX_JOBS as HOSTILE

KERNEL_LAYERS = sandbox_confine.landlock_abi() > 0 or sandbox_confine._SECCOMP is not None
needs_kernel_layer = pytest.mark.skipif(not KERNEL_LAYERS, reason="neither Landlock nor seccomp on this platform")
REACHED_OUT = r"made the loader reach outside the pickle sandbox"


def pickled(tmp_path, target) -> object:
    path = tmp_path / "data" / "raw" / "reviews.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(target, 2))
    return path


@needs_kernel_layer
def test_a_file_outside_the_data_dir_cannot_be_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    with pytest.raises(InputError, match=rf"reviews\.pkl {REACHED_OUT}"):
        pickle_sandbox.load(pickled(tmp_path, str(secret)), HOSTILE["read_file"])


@needs_kernel_layer
def test_no_file_can_be_created(tmp_path):
    target = tmp_path / "data" / "raw" / "written.txt"
    with pytest.raises(InputError, match=REACHED_OUT):
        pickle_sandbox.load(pickled(tmp_path, str(target)), HOSTILE["write_file"])
    assert not target.exists()


@needs_kernel_layer
@pytest.mark.parametrize("action", ["run_program", "shell"])
def test_no_program_starts(tmp_path, action):
    marker = tmp_path / "pwned"
    try:
        pickle_sandbox.load(pickled(tmp_path, str(marker)), HOSTILE[action])
    except InputError as error:  # subprocess raises; os.system only returns a failure status
        assert REACHED_OUT in str(error)
    assert not marker.exists(), "a program ran inside the sandbox"


@needs_kernel_layer
def test_no_network_connection(tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.1)
        with pytest.raises(InputError, match=REACHED_OUT):
            pickle_sandbox.load(pickled(tmp_path, str(server.getsockname()[1])), HOSTILE["connect"])
        with pytest.raises(socket.timeout):
            server.accept()


@needs_kernel_layer
def test_no_signal_to_the_parent(tmp_path):
    with pytest.raises(InputError, match=REACHED_OUT):
        pickle_sandbox.load(pickled(tmp_path, "x"), HOSTILE["signal_parent"])


def test_the_child_does_not_see_secrets_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    with pytest.raises(InputError, match=r"AWS_SECRET_ACCESS_KEY=absent"):
        pickle_sandbox.load(pickled(tmp_path, "AWS_SECRET_ACCESS_KEY"), HOSTILE["environment"])


def test_memory_limit_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(pickle_sandbox, "BASE_MEMORY_BYTES", 2 << 30)
    with pytest.raises(InputError, match=r"reviews\.pkl needs more than the pickle sandbox's \d+ bytes of memory"):
        pickle_sandbox.load(pickled(tmp_path, "x"), HOSTILE["allocate"])


def test_a_hang_is_stopped_at_the_wall_clock_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(pickle_sandbox, "BASE_TIMEOUT_S", 4.0)
    with pytest.raises(InputError, match=r"reviews\.pkl: loading it took longer than 4 s in the pickle sandbox, "
                                         r"so it was stopped: expected a test pickle"):
        pickle_sandbox.load(pickled(tmp_path, "x"), HOSTILE["spin"])


def test_a_crash_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"reviews\.pkl: loading it crashed the pickle sandbox process \(SIGSEGV\): "
                                         r"the file is corrupt or crafted: expected a test pickle"):
        pickle_sandbox.load(pickled(tmp_path, "x"), HOSTILE["crash"])


def test_the_active_layers_are_reported(tmp_path, caplog):
    frame = pd.DataFrame({"reviewerID": ["A1"], "asin": ["B1"], "unixReviewTime": [1]})
    path = pickled(tmp_path, frame)
    pickle_sandbox._reported_layers.clear()
    with caplog.at_level(logging.INFO, logger="luigi-interface"):
        frames, info = pickle_sandbox.load(path, SANDBOX_JOBS["reviews"])
    assert frames["reviews"]["asin"].tolist() == ["B1"] and info == {"rows": 1}
    messages = [record.getMessage() for record in caplog.records if "pickle sandbox" in record.getMessage()]
    assert len(messages) == 1
    if KERNEL_LAYERS:
        assert messages[0].startswith("pickle sandbox active: rlimits, ")
    else:
        assert "neither Landlock nor seccomp" in messages[0]


def test_without_kernel_layers_the_user_is_told_once(caplog):
    pickle_sandbox._reported_layers.clear()
    with caplog.at_level(logging.INFO, logger="luigi-interface"):
        pickle_sandbox._report_layers(["rlimits"])
        pickle_sandbox._report_layers(["rlimits"])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "neither Landlock nor seccomp is available here" in warnings[0].getMessage()
    assert "docs/security.md" in warnings[0].getMessage()


# ---------------------------------------------------------------- what the parent accepts back


def ipc(table) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def receive(tmp_path, data: bytes, job=SANDBOX_JOBS["reviews"], output_bytes: int = 1 << 20):
    """What the reply reader, then the parent, make of `data` on a worker's pipe: (record, frames), or an InputError."""
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=lambda: (_write_all(write_end, data), os.close(write_end)), daemon=True)
    writer.start()
    path, columns = tmp_path / "reviews.pkl", job.frames["reviews"]
    with tempfile.TemporaryFile() as scratch:
        record = reply._read_file({"name": str(path), "pipe": read_end, "scratch": {"reviews": scratch.fileno()},
                                   "frames": job.frames, "info_keys": list(job.info_keys),
                                   "output_bytes": output_bytes})
        writer.join(10)
        if record["status"] != reply.OK:
            raise InputError(record.get("error", record["status"]))
        table = reply.mapped_table(scratch.fileno(), columns, output_bytes, path, "reviews")
        return record, {"reviews": pickle_sandbox._frame(table, columns)}


def _write_all(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[: 1 << 16]):]
    except OSError:  # the reader closed its end: what a worker gets too
        pass


GOOD_HEADER = b'{"ok": true, "info": {"rows": 1}, "layers": ["rlimits"]}\n'


@pytest.mark.parametrize("columns, message", [
    ({"reviewerID": ["A"], "asin": ["B"]}, r"sent reviews columns \['reviewerID', 'asin'\], expected"),
    ({"reviewerID": ["A"], "asin": ["B"], "unixReviewTime": [1.5]}, r"column unixReviewTime as double"),
    ({"reviewerID": ["A", None], "asin": ["B", "C"], "unixReviewTime": [1, 2]}, r"column reviewerID .* 1 nulls"),
])
def test_the_parent_checks_the_schema_and_values_it_gets_back(tmp_path, columns, message):
    import pyarrow as pa

    with pytest.raises(InputError, match=message):
        receive(tmp_path, GOOD_HEADER + ipc(pa.table(columns)))


def test_the_parent_refuses_trailing_data_and_bad_counts(tmp_path):
    import pyarrow as pa

    good = ipc(pa.table({"reviewerID": ["A"], "asin": ["B"], "unixReviewTime": [1]}))
    record, frames = receive(tmp_path, GOOD_HEADER + good)
    assert frames["reviews"]["asin"].tolist() == ["B"]
    with pytest.raises(InputError, match=r"more data than the frames it declared"):
        receive(tmp_path, GOOD_HEADER + good + b"extra")
    for info in ({"rows": -1}, {"rows": 1, "more": 2}, {"rows": "1"}, None):
        with pytest.raises(InputError, match=r"malformed counts"):
            reply.read_info(info, SANDBOX_JOBS["reviews"].info_keys, tmp_path / "reviews.pkl")


def test_the_parent_maps_a_scratch_file_only_within_the_cap_and_checks_it_again(tmp_path):
    import pyarrow as pa

    columns = SANDBOX_JOBS["reviews"].frames["reviews"]
    table = pa.table({"reviewerID": ["A"], "asin": ["B"], "unixReviewTime": [1]})
    path = tmp_path / "reviews.pkl"
    with tempfile.TemporaryFile() as scratch:
        with pytest.raises(InputError, match=r"reviews\.pkl: the pickle sandbox's reply reader left 0 bytes"):
            reply.mapped_table(scratch.fileno(), columns, 1 << 20, path, "reviews")
        scratch.write(ipc(table))
        scratch.flush()
        assert reply.mapped_table(scratch.fileno(), columns, 1 << 20, path, "reviews").equals(table)
        scratch.truncate(reply.SCRATCH_SLACK_BYTES + 1001)  # a size the parent refuses before mapping
        with pytest.raises(InputError, match=rf"left {reply.SCRATCH_SLACK_BYTES + 1001} bytes of reviews data, "
                                             rf"expected 1 to {reply.SCRATCH_SLACK_BYTES + 1000}"):
            reply.mapped_table(scratch.fileno(), columns, 1000, path, "reviews")
    with tempfile.TemporaryFile() as scratch:  # what only a compromised reader would leave
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
            writer.write_table(table)
        scratch.write(sink.getvalue().to_pybytes())
        scratch.flush()
        with pytest.raises(InputError, match=r"sent compressed reviews data"):
            reply.mapped_table(scratch.fileno(), columns, 1 << 20, path, "reviews")


def test_the_reader_records_are_trusted_for_nothing():
    lines = b"\n".join([b"[" * 60_000, b'{"index": 5, "status": "ok"}', b'{"index": 0, "status": "owned"}',
                        b'{"index": 0, "status": "over-memory"}', b'{"index": 0, "status": "ok"}', b"\xff"])
    assert reply.parse_results(lines, 2) == {0: {"index": 0, "status": "over-memory"}}


def finished(tmp_path, results: dict, reader_returncode: int, worker_returncode: int = 0):
    """What the parent says of reviews.pkl given the reply reader's records and exit status."""
    limits = pickle_sandbox.Limits(10.0, 1 << 30, 21, 1 << 20, 256 << 20)
    request = pickle_sandbox._Request(tmp_path / "reviews.pkl", SANDBOX_JOBS["reviews"], limits, -1, -1, -1, {})
    outputs = {"stderr": b"", "returncodes": {0: worker_returncode}, "child_returncode": 0, "results": results,
               "reader_returncode": reader_returncode, "reader_stderr": b"Traceback\nKeyError: 'x'\n",
               "reader_memory": 256 << 20}
    with pytest.raises(InputError) as caught:
        pickle_sandbox._finish(request, outputs, None, 0)
    return str(caught.value)


def test_a_reply_reader_at_its_limits_or_broken_is_one_error_naming_the_file(tmp_path):
    over_memory = {0: {"index": 0, "status": reply.OVER_MEMORY}}
    limit = r".*reviews\.pkl: reading its reply from the pickle sandbox needed more than the 268435456 bytes of memory "
    # The worker's exit (EPIPE once the reader stopped) does not hide why.
    assert re.match(limit, finished(tmp_path, over_memory, reply.OVER_LIMIT, worker_returncode=1))
    assert re.match(r".*reviews\.pkl: reading its reply .* stopped the reply reader \(SIGABRT\) at its limits "
                    r"\(268435456 bytes of memory, 21 CPU seconds\)", finished(tmp_path, {}, -signal.SIGABRT))
    assert re.match(r".*reviews\.pkl: the pickle sandbox's reply reader ended without reading its reply "
                    r"\(exit 1: KeyError: 'x'\)", finished(tmp_path, {}, 1))
    assert re.match(r".*reviews\.pkl: the pickle sandbox exited normally but its reply did not start",
                    finished(tmp_path, {0: {"index": 0, "status": reply.NO_HEADER}}, reply.STOPPED))


def test_limits_come_from_the_size_on_disk_never_from_a_gzip_trailer(tmp_path):
    import gzip

    data = gzip.compress(b"\x80\x02N." * 1000)
    honest, lying = tmp_path / "honest.pkl", tmp_path / "lying.pkl"
    honest.write_bytes(data)
    lying.write_bytes(data[:-4] + (0xFFFFFFFF).to_bytes(4, "little"))  # claims 4 GiB inflated
    size = len(data)
    assert pickle_sandbox.limits_for(honest, size) == pickle_sandbox.limits_for(lying, size)
    assert pickle_sandbox.limits_for(lying, size).output_bytes == (
        pickle_sandbox.BASE_OUTPUT_BYTES + pickle_sandbox.OUTPUT_PER_BYTE * pickle_sandbox.GZIP_SCALE * size)
