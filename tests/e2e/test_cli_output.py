"""What the real `luigi --module pipeline ...` command prints: one ERROR line and the
documented exit code for each user mistake, a line per task that ran, the summary block,
the raw-manifest check, and no `.locks/` left behind."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from din_common.feature_spec import FeatureSpec

REPO = Path(__file__).resolve().parents[2]
LUIGI = Path(sys.executable).parent / "luigi"
TINY = ["--raw-synthetic-users", "300", "--raw-synthetic-items", "400", "--raw-synthetic-categories", "12",
        "--preprocess-num-shards", "2", "--preprocess-maxlen", "5", "--preprocess-prebatch", "64"]
TASK_FAILED, SCHEDULING_ERROR, TASK_NOT_BUILT = 30, 35, 40  # luigi.cfg [retcode], README "Troubleshooting"


def luigi(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [str(LUIGI), "--module", "pipeline", *args, "--paths-data-dir", str(data_dir)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("ERROR:")]


def assert_one_error(result: subprocess.CompletedProcess, pattern: str, code: int) -> str:
    errors = error_lines(result)
    assert len(errors) == 1, result.stdout + result.stderr
    assert re.search(pattern, errors[0]), errors[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == code
    return errors[0]


@pytest.mark.parametrize("args, pattern, code", [
    (["AllTask"], r"^ERROR: no task named 'AllTask' in --module pipeline; did you mean AllTasks\?", SCHEDULING_ERROR),
    (["Preprocess", "--preprocess-maxlen", "abc"],
     r"^ERROR: \[preprocess\] maxlen has a value Luigi cannot parse: .*'abc'.*--preprocess-maxlen\)$",
     SCHEDULING_ERROR),
    (["Preprocess", "--preprocess-maxlen", "0"],
     r"^ERROR: \[preprocess\] maxlen must be a positive integer, got 0", SCHEDULING_ERROR),
    (["Preprocess", "--raw-source", "bogus"], r"^ERROR: \[raw\] source must be one of .*got 'bogus'", SCHEDULING_ERROR),
    (["TrainDIN", "--train-learning-rate", "fast"],
     r"^ERROR: \[train\] learning_rate has a value Luigi cannot parse: .*'fast'", SCHEDULING_ERROR),
    (["Preprocess", "--raw-source", "pickle"], r"^ERROR: missing .*raw/reviews\.pkl", TASK_FAILED),
    (["BuildSequences"], r"^ERROR: BuildSequences needs its shard parameter: add --shard VALUE$", TASK_NOT_BUILT),
    (["BuildSequences", "--shard", "abc"], r"^ERROR: --shard has a value Luigi cannot parse: .*'abc'$", TASK_NOT_BUILT),
])
def test_each_mistake_is_one_error_line_and_a_documented_exit_code(tmp_path, args, pattern, code):
    data_dir = tmp_path / "data"
    assert_one_error(luigi(data_dir, *args), pattern, code)
    assert not (data_dir / ".locks").exists()


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("cli") / "data"
    first = luigi(data_dir, "Preprocess", *TINY)
    assert first.returncode == 0, first.stderr
    return data_dir, first


def test_each_task_that_ran_prints_what_it_wrote(stage1_run):
    data_dir, first = stage1_run
    spec = FeatureSpec.read(data_dir / "tfrecords" / "feature_spec.json")
    stats = json.loads((data_dir / "remap" / "stats.json").read_text())
    lines = first.stdout.splitlines()
    assert any(line.startswith("[PrepareRaw] raw data from [raw] source = synthetic: reviews.pkl ") for line in lines)
    assert f"[RemapIds] {stats['reviews_kept']:,} reviews of 300 users, {stats['n_items']:,} items, 12 categories " \
           f"-> {data_dir / 'remap'} (" in first.stdout
    for shard in (0, 1):
        shard_manifest = json.loads((data_dir / "sequences" / "_shards" / f"part-0000{shard}.json").read_text())
        counts = " / ".join(f"{split} {shard_manifest['samples'][split]:,}" for split in ("train", "val", "test"))
        assert (f"[BuildSequences {shard + 1}/2] {counts} samples -> "
                f"{data_dir / 'sequences'}/{{train,val,test}}/part-0000{shard}.parquet (") in first.stdout
        assert any(line.startswith(f"[WriteTFRecords {shard + 1}/2] {counts} samples in ")
                   and line.endswith(", written with the shard's sequences (0.0 s)") for line in lines)
    totals = " / ".join(f"{split} {spec.samples(split):,}" for split in ("train", "val", "test"))
    assert f"[Preprocess] stage 1 done: {totals} samples in 2 shards -> {data_dir / 'tfrecords/feature_spec.json'}" \
        in first.stdout
    assert re.search(r"^ran: +PrepareRaw, RemapIds, BuildSequences \(2 shards\), WriteTFRecords \(2 shards\), "
                     r"Preprocess$", first.stdout, re.MULTILINE)
    assert re.search(rf"^samples: +{totals} \(2 shards\)$", first.stdout, re.MULTILINE)
    assert first.stderr == ""
    assert not (data_dir / ".locks").exists()


def test_a_second_run_says_everything_is_up_to_date(stage1_run):
    data_dir, _ = stage1_run
    again = luigi(data_dir, "Preprocess", *TINY)
    assert again.returncode == 0
    assert re.search(r"^already up to date: Preprocess \(and everything it needs\)$", again.stdout, re.MULTILINE)
    assert "[RemapIds]" not in again.stdout and "ran:" not in again.stdout


@pytest.mark.parametrize("damage, pattern", [
    (lambda data: data[:-10], r"it has [\d,]+ bytes, but the pipeline wrote [\d,]+"),
    (lambda data: data[:100] + bytes([data[100] ^ 0xFF]) + data[101:], r"its content differs .* \(same size\)"),
])
def test_a_damaged_raw_pickle_is_reported_even_when_everything_is_up_to_date(stage1_run, tmp_path, damage, pattern):
    data_dir, _ = stage1_run
    copy = tmp_path / "data"
    subprocess.run(["cp", "-a", str(data_dir), str(copy)], check=True)
    reviews = copy / "raw" / "reviews.pkl"
    reviews.write_bytes(damage(reviews.read_bytes()))
    line = assert_one_error(luigi(copy, "Preprocess", *TINY), pattern, SCHEDULING_ERROR)
    assert line.startswith(f"ERROR: {reviews} does not match {copy / 'raw' / 'manifest.json'}: ")
    assert line.endswith(f"rm {copy / 'raw/manifest.json'} {reviews} {copy / 'raw/meta.pkl'} and rerun the same command")
