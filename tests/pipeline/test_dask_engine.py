"""`[preprocess] engine = dask`: the same bytes as the local engine, on an in-process, a Local and a real cluster.

Quick: the streamed parquet writer against one whole write, the dask remap against remap_ids on
the hand-made fixture cut into partitions, the settings' and raw parquet's one-line errors.
Slow (each starts dask processes): a LocalCluster run and a `dask scheduler` with two `dask worker`
processes give the local engine's sha256 for every output file; a rerun does nothing; a run killed
in the middle of the dask remap or in a worker leaves nothing a rerun mistakes for current.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import luigi
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from din_common.errors import InputError
from din_common.faults import KILL_AT_VARIABLE
from pipeline.dask_engine import cluster, remap as dask_remap
from pipeline.raw.parquet_files import read_meta, read_review_file
from pipeline.raw.synthetic_parquet import write_raw_parquet
from pipeline.remap import remap_ids
from pipeline.settings import Settings
from pipeline.tasks import base
from pipeline.tasks.stage1 import Preprocess
from tests.helpers import stage1_fixtures as fx
from tests.helpers.luigi_config import TINY_SYNTHETIC, luigi_settings
from tests.helpers.output_digests import digests

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[2]
SHAPE = {"maxlen": "5", "num_shards": "3", "prebatch": "64"}


def test_a_streamed_parquet_write_is_one_whole_write_byte_for_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "ROW_GROUP_ROWS", 3)
    table = pa.table({"user_id": pa.array(np.arange(11, dtype=np.int32)), "name": [f"u{i % 4}" for i in range(11)]})
    base.write_parquet_atomic(table, tmp_path / "whole.parquet")
    pieces = [table.slice(0, 2), table.slice(2, 5), table.slice(7, 0), table.slice(7, 4)]
    assert base.write_parquet_stream_atomic(iter(pieces), tmp_path / "streamed.parquet", table.schema) == 11
    assert (tmp_path / "streamed.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    assert pq.ParquetFile(tmp_path / "whole.parquet").num_row_groups == 4


def test_the_dask_remap_writes_remap_ids_tables_and_stats(tmp_path, monkeypatch):
    # Small partitions, buckets and row groups, so every step meets several of each.
    monkeypatch.setattr(base, "ROW_GROUP_ROWS", 3)
    monkeypatch.setattr(dask_remap, "BUCKET_ROWS", 4)
    local = Settings(data_dir=tmp_path / "local", source="pickle", synthetic={}, maxlen=5, num_shards=2,
                     prebatch=4, seed=1)
    expected = remap_ids(fx.REVIEWS, fx.META)
    for name, path in local.remap_tables().items():
        base.write_parquet_atomic(getattr(expected, name), path)
    on_dask = Settings(**{**local.__dict__, "data_dir": tmp_path / "dask"})
    with distributed.Client(processes=False, dashboard_address=None) as client:
        parts = client.map(dask_remap.encode_partition, client.scatter(dask_remap.frame_partitions(fx.REVIEWS, 4)))
        stats = dask_remap.remap_on_cluster(client, parts, fx.META, on_dask, "reviews")
    assert stats == expected.stats
    for name, path in local.remap_tables().items():
        assert on_dask.remap_tables()[name].read_bytes() == path.read_bytes(), name


def test_the_dask_remap_reports_inputs_without_known_asins_as_the_local_one_does(tmp_path):
    settings = Settings(data_dir=tmp_path, source="pickle", synthetic={}, maxlen=5, num_shards=2, prebatch=4, seed=1)
    meta = pd.DataFrame({"asin": ["nothing"], "category": ["x"]})
    with distributed.Client(processes=False, dashboard_address=None) as client:
        with pytest.raises(InputError, match="none of the 13 reviews has an asin that appears in meta"):
            parts = client.map(dask_remap.encode_partition,
                               client.scatter(dask_remap.frame_partitions(fx.REVIEWS, 5)))
            dask_remap.remap_on_cluster(client, parts, meta, settings, "reviews")
    assert not list(tmp_path.rglob("*.parquet"))


@pytest.mark.parametrize("section, key, value, message", [
    ("preprocess", "engine", "spark", r"\[preprocess\] engine must be one of local, dask, got 'spark'"),
    ("dask", "workers", "0", r"\[dask\] workers must be a positive integer, got 0"),
    ("dask", "memory_limit", "lots", r"\[dask\] memory_limit must be auto, 0 \(no limit\) or a size such as 8GB"),
])
def test_bad_engine_settings_are_one_line(section, key, value, message):
    with luigi_settings(preprocess={"engine": "dask"}), luigi_settings(**{section: {key: value}}):
        with pytest.raises(InputError, match=message):
            Settings.current()


def test_no_scheduler_at_the_address_is_one_line(monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(InputError, match=r"\[dask\] scheduler_address = tcp://127.0.0.1:9: no scheduler answered "
                                         r"within 1s .*expected a running `dask scheduler` at that address"):
        with cluster.cluster_client({"scheduler_address": "tcp://127.0.0.1:9"}):
            pass


def test_raw_parquet_problems_name_the_file_and_column(tmp_path):
    write_raw_parquet(tmp_path, 30, 40, 5, 7, copies=2)
    assert read_review_file(tmp_path / "reviews" / "part-00001.parquet")["reviewerID"].str.startswith("1").all()
    meta, info = read_meta(tmp_path)
    assert info == {"rows": 80, "duplicate_meta_asins_dropped": 0, "files": 2} and list(meta.columns) == \
        ["asin", "category"]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"reviewerID": ["a"], "asin": ["b"]}), bad)
    with pytest.raises(InputError, match=f"{bad} has no column unixReviewTime .*: expected the columns reviewerID"):
        read_review_file(bad)
    pq.write_table(pa.table({"reviewerID": ["a"], "asin": ["b"], "unixReviewTime": ["soon"]}), bad)
    with pytest.raises(InputError, match=f"{bad} column unixReviewTime"):
        read_review_file(bad)
    bad.write_bytes(b"not parquet")
    with pytest.raises(InputError, match=f"{bad} is not a readable parquet file"):
        read_review_file(bad)


# --------------------------------------------------------------------------- real clusters (slow)

def build(data_dir: Path, **sections) -> luigi.execution_summary.LuigiRunResult:
    sections = {"paths": {"data_dir": data_dir}, "preprocess": dict(SHAPE), **sections}
    with luigi_settings(**sections):
        return luigi.build([Preprocess()], local_scheduler=True, detailed_summary=True, log_level="WARNING")


@pytest.mark.slow
def test_a_local_cluster_writes_the_local_engines_bytes_and_a_rerun_does_nothing(tmp_path):
    assert build(tmp_path / "local", raw=dict(TINY_SYNTHETIC)).status.name == "SUCCESS"
    dask = {"raw": dict(TINY_SYNTHETIC), "preprocess": {**SHAPE, "engine": "dask"},
            "dask": {"workers": "2", "memory_limit": "2GB"}}
    assert build(tmp_path / "dask", **dask).status.name == "SUCCESS"
    assert digests(tmp_path / "dask") == digests(tmp_path / "local")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "dask").rglob("*") if p.is_file()}
    again = build(tmp_path / "dask", **dask)
    assert "Scheduled 1 tasks of which:\n* 1 complete ones were encountered" in again.summary_text
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "dask").rglob("*") if p.is_file()} == before


def _dask_command(role: str) -> list[str]:
    """`dask scheduler` / `dask worker` (dask >= 2022.10), else the older `dask-scheduler` / `dask-worker`."""
    bin_dir = Path(sys.executable).parent
    return [str(bin_dir / "dask"), role] if (bin_dir / "dask").exists() else [str(bin_dir / f"dask-{role}")]


@pytest.fixture()
def localhost_cluster(tmp_path):
    """A `dask scheduler` and two single-threaded `dask worker` processes on 127.0.0.1; yields the address."""
    scheduler_file = tmp_path / "scheduler.json"
    logs = open(tmp_path / "cluster.log", "w")
    processes = [subprocess.Popen([*_dask_command("scheduler"), "--host", "127.0.0.1", "--port", "0",
                                   "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                                  cwd=tmp_path, stdout=logs, stderr=logs)]
    try:
        for _ in range(2):
            processes.append(subprocess.Popen([*_dask_command("worker"), "--scheduler-file", str(scheduler_file),
                                               "--nthreads", "1", "--no-dashboard", "--memory-limit", "2GB"],
                                              cwd=tmp_path, stdout=logs, stderr=logs))
        deadline = time.monotonic() + 120
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        with distributed.Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            address = client.scheduler.address
        yield address
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
        logs.close()


@pytest.mark.slow
def test_a_scheduler_and_two_workers_write_the_local_engines_bytes_from_raw_parquet(tmp_path, localhost_cluster):
    for engine in ("local", "dask"):
        write_raw_parquet(tmp_path / engine / "raw", 300, 400, 12, 7, copies=3)
        result = build(tmp_path / engine, raw={"source": "parquet"}, preprocess={**SHAPE, "engine": engine},
                       dask={"scheduler_address": localhost_cluster})
        assert result.status.name == "SUCCESS"
    assert digests(tmp_path / "dask") == digests(tmp_path / "local")


def run_luigi(data_dir: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != KILL_AT_VARIABLE}
    if kill_at:
        env[KILL_AT_VARIABLE] = kill_at
    tiny = [f"--raw-{key.replace('_', '-')}={value}" for key, value in TINY_SYNTHETIC.items()]
    shape = [f"--preprocess-{key.replace('_', '-')}={value}" for key, value in SHAPE.items()]
    command = [sys.executable, "-m", "luigi", "--module", "pipeline", "Preprocess", "--paths-data-dir",
               str(data_dir), "--preprocess-engine", "dask", "--dask-memory-limit", "2GB", *tiny, *shape]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["atomic:reviews.parquet",      # the Luigi process, streaming the buckets
                                     "atomic:part-00001.parquet"])  # a dask worker, writing a shard's samples
def test_a_killed_dask_run_leaves_nothing_partial(tmp_path, kill_at):
    reference = tmp_path / "reference"
    assert build(reference, raw=dict(TINY_SYNTHETIC)).status.name == "SUCCESS"
    data_dir = tmp_path / "data"
    killed = run_luigi(data_dir, kill_at)
    assert killed.returncode != 0
    stage = "remap" if kill_at == "atomic:reviews.parquet" else "sequences"
    manifests = {"remap": [data_dir / "remap" / "stats.json"],
                 "sequences": list((data_dir / "sequences" / "_shards").glob("part-00001.json"))}[stage]
    assert not [path for path in manifests if path.exists()]
    rerun = run_luigi(data_dir)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert not [p for p in data_dir.rglob("*") if ".tmp-" in p.name]
    assert digests(data_dir) == digests(reference)
