"""Stage 2 through the real `luigi` command, on inputs a user may have edited: a tampered
tfrecords/feature_spec.json is one ERROR line and exit 35 before anything trains, and the run
id follows what is trained on (the spec's content), never changing for unchanged data."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_cli_output import SCHEDULING_ERROR, TASK_FAILED, TINY, assert_one_error, luigi

# a dozen `luigi` commands, a training run and a stage-1 run: CI runs them with the slow tests
pytestmark = pytest.mark.slow

TRAIN = ["TrainDIN", *TINY, "--train-epochs", "1", "--train-embed-dim", "4", "--train-device", "cpu"]
RUN_FOLDER = "run folder:"  # the summary's line naming the run directory, whose name is the run id


@pytest.fixture(scope="module")
def stage1_data(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("stage2") / "data"
    first = luigi(data_dir, "Preprocess", *TINY)
    assert first.returncode == 0, first.stderr
    return data_dir


@pytest.fixture()
def data_copy(stage1_data, tmp_path):
    copy = tmp_path / "data"
    subprocess.run(["cp", "-a", str(stage1_data), str(copy)], check=True)
    return copy


def edit_spec(data_dir, edit) -> None:
    path = data_dir / "tfrecords" / "feature_spec.json"
    content = json.loads(path.read_text())
    edit(content, data_dir)
    path.write_text(json.dumps(content))


def outside_shard(data_dir):
    other = data_dir.parent / "other" / "tfrecords"
    other.mkdir(parents=True)
    return shutil.copy(data_dir / "tfrecords" / "train" / "part-00000.tfrecord", other / "x.tfrecord")


def link_outside(content, data_dir):
    (data_dir / "tfrecords" / "train" / "link.tfrecord").symlink_to(outside_shard(data_dir))
    content["splits"]["train"]["files"][0] = "train/link.tfrecord"


@pytest.mark.parametrize("edit, pattern", [
    (lambda c, d: c.update(maxlen=40), r"feature_spec\.json: maxlen is 40 but stage 1 wrote the shards with maxlen 5 "),
    (lambda c, d: c.update(maxlen=0), r"feature_spec\.json: maxlen is 0, expected a positive integer"),
    (lambda c, d: c["splits"]["train"]["files"].pop(), r"feature_spec\.json: splits\.train\.files leaves out "
                                                       r"train/part-00001\.tfrecord, but stage 1 wrote 2 train shards"),
    (lambda c, d: (outside_shard(d), c["splits"]["train"]["files"].__setitem__(0, "../../other/tfrecords/x.tfrecord")),
     r"splits\.train\.files\[0\] = '\.\./\.\./other/tfrecords/x\.tfrecord' lies outside .*/data/tfrecords; "),
    (lambda c, d: c["splits"]["train"]["files"].__setitem__(0, str(outside_shard(d))),
     r"splits\.train\.files\[0\] = '/.*/other/tfrecords/x\.tfrecord' lies outside .*/data/tfrecords; "),
    (link_outside, r"splits\.train\.files\[0\] = 'train/link\.tfrecord' lies outside .*/data/tfrecords; "),
    (lambda c, d: c.update(n_items=c["n_items"] // 2),
     r"feature_spec\.json: n_items is \d+ but .*/data/remap/stats\.json says \d+; "),
], ids=["maxlen-40", "maxlen-0", "train-file-removed", "relative-outside", "absolute-outside", "symlink-outside",
        "n-items-halved"])
def test_an_edited_feature_spec_is_one_error_line_and_nothing_trains(data_copy, edit, pattern):
    edit_spec(data_copy, edit)
    line = assert_one_error(luigi(data_copy, *TRAIN), pattern, SCHEDULING_ERROR)
    assert line.startswith(f"ERROR: {data_copy / 'tfrecords' / 'feature_spec.json'}: ")
    spec = data_copy / "tfrecords" / "feature_spec.json"
    assert line.endswith(f"; rm {spec} and rerun `luigi --module pipeline Preprocess` to rewrite it")
    assert not (data_copy / "runs").exists()
    assert not (data_copy / ".locks").exists()


def run_folder(result: subprocess.CompletedProcess) -> Path:
    """The run folder a finished `luigi` command's summary names (pipeline/cli/summary.py, run_lines)."""
    assert result.returncode == 0, result.stdout + result.stderr
    (folder,) = [line[len(RUN_FOLDER):].strip() for line in result.stdout.splitlines() if line.startswith(RUN_FOLDER)]
    return Path(folder)


def test_the_run_id_stays_for_rebuilt_data_and_changes_with_an_edited_spec(data_copy):
    trained = luigi(data_copy, *TRAIN)
    honest = run_folder(trained)
    assert honest.parent == data_copy / "runs"
    assert f"[TrainDIN] run {honest.name}: " in trained.stdout
    shutil.rmtree(data_copy / "tfrecords")  # the same shards rebuilt: the same run, so nothing to train
    assert luigi(data_copy, "Preprocess", *TINY).returncode == 0
    rebuilt = luigi(data_copy, *TRAIN)
    assert run_folder(rebuilt) == honest
    assert "already up to date: TrainDIN (and everything it needs)" in rebuilt.stdout
    # Without the shard manifests nothing vouches for the spec: while the command schedules, the edit counts
    # as other data (another run id, so the honest run does not make TrainDIN up to date); once stage 1 has
    # rewritten the manifests, the run refuses the edit and the honest run is left as it was.
    shutil.rmtree(data_copy / "tfrecords" / "_shards")
    edit_spec(data_copy, lambda content, _: content["splits"]["train"]["files"].pop())
    metrics = (honest / "metrics.json").read_text()
    edited = luigi(data_copy, *TRAIN)
    assert_one_error(edited, r"feature_spec\.json: splits\.train\.files leaves out train/part-00001\.tfrecord",
                     TASK_FAILED)
    assert re.search(r"^failed: +TrainDIN$", edited.stdout, re.MULTILINE), edited.stdout
    assert list((data_copy / "runs").iterdir()) == [honest]
    assert (honest / "metrics.json").read_text() == metrics


def test_an_embedding_too_large_for_the_memory_is_one_error_line_before_anything_is_built(stage1_data):
    result = luigi(stage1_data, *TRAIN, "--train-embed-dim", "10000000")
    assert_one_error(result, r"^ERROR: \[train\] embed_dim = 10000000 needs about [\d.]+ GiB for the weights of a model "
                             r"of \d+ items and \d+ categories with Adam's two slots, more than the [\d.]+ GiB of "
                             r"memory available; lower it \(in luigi\.cfg or with --train-embed-dim\)$", SCHEDULING_ERROR)
    assert not (stage1_data / "runs").exists()
    assert not (stage1_data / ".locks").exists()


def test_before_stage_1_ran_the_training_run_refuses_it_before_building_the_model(tmp_path):
    data_dir = tmp_path / "data"
    result = luigi(data_dir, *TRAIN, "--train-embed-dim", "10000000")
    assert_one_error(result, r"^ERROR: \[train\] embed_dim = 10000000 needs about [\d.]+ GiB for the weights ",
                     TASK_FAILED)  # the spec did not exist while scheduling: the run's own check refused it
    assert (data_dir / "tfrecords" / "feature_spec.json").is_file()
    assert not (data_dir / "runs").exists()
    assert not (data_dir / ".locks").exists()
