"""Multi-worker training from TF_CONFIG: two worker processes on 127.0.0.1, plus the TF_CONFIG rules."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from din_common.errors import InputError
from din_model.parallel import cluster as distribute
from din_model.parallel.placement import check_files_per_process
from tests.helpers.checkpoints import optimizer_iterations
from tests.helpers.din_fixtures import write_random_fixture
from tests.helpers.multiworker import PRINT_RETURNED, free_ports, tf_config, worker_ended_well

REPO = Path(__file__).resolve().parents[2]
TINY = dict(embed_dim=4, attention_hidden="8,4", mlp_hidden="8,4", batch_size=64, learning_rate=0.01, device="cpu",
            epochs=1)
TRAIN_SAMPLES = 1200
WORKER_TIMEOUT_S = 240

# The worker entry point: train, dump the final trainable weights (after the last checkpoint save) and
# the train file shards it read to files outside the run directory, named by argv (test only; the
# training code knows nothing of it).
WORKER_ENTRY = """
import json, sys
import numpy as np
from din_model.run import loop as training
from din_model.parallel import cluster as distribute
from din_model.params import TrainParams

spec_path, run_dir, weights_path, shards_path, params_json = sys.argv[1:6]
real_save = training.TrainingState.save
real_make_dataset = distribute.make_dataset
shards = []

def make_dataset_and_record(spec, split, *args, **kwargs):
    shards.append([split, list(kwargs.get("file_shard") or [])])
    return real_make_dataset(spec, split, *args, **kwargs)

def save_and_dump(self, epochs_done):
    saved = real_save(self, epochs_done)
    np.savez(weights_path, *[variable.numpy() for variable in self.model.trainable_variables])
    return saved

training.TrainingState.save = save_and_dump
distribute.make_dataset = make_dataset_and_record
training.train(spec_path, run_dir, TrainParams(**json.loads(params_json)))
with open(shards_path, "w") as handle:
    json.dump(shards, handle)
""" + PRINT_RETURNED


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return write_random_fixture(root, sizes=(("train", TRAIN_SAMPLES), ("val", 300), ("test", 100)),
                                n_items=60, n_cats=6, num_shards=4)


@pytest.mark.slow
def test_two_workers_train_one_model_and_only_the_chief_writes(spec_path, tmp_path):
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    run_dirs = [tmp_path / "run-chief", tmp_path / "run-worker1"]  # separate, to see that worker 1 writes nothing
    weights = [tmp_path / f"weights-{i}.npz" for i in range(2)]
    shards = [tmp_path / f"shards-{i}.json" for i in range(2)]
    scratch = [tmp_path / f"tmp-{i}" for i in range(2)]
    processes = []
    started = time.perf_counter()
    for index in range(2):
        scratch[index].mkdir()
        env = {**os.environ, "TF_CONFIG": tf_config(addresses, index), "TMPDIR": str(scratch[index]),
               "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = [sys.executable, "-c", WORKER_ENTRY, str(spec_path), str(run_dirs[index]), str(weights[index]),
                   str(shards[index]), json.dumps(TINY)]
        processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=WORKER_TIMEOUT_S)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    wall_s = time.perf_counter() - started
    print(f"2-worker run: {wall_s:.1f} s wall")
    for index, (process, output) in enumerate(zip(processes, outputs)):
        assert worker_ended_well(process, output), \
            f"worker {index} exited {process.returncode}:\n{output[-4000:]}"
    assert "[train] MultiWorkerMirroredStrategy: 2 workers, this is worker 0 (chief)" in outputs[0]
    assert "[train] MultiWorkerMirroredStrategy: 2 workers, this is worker 1" in outputs[1]

    chief = run_dirs[0]
    metrics = json.loads((chief / "metrics.json").read_text())
    assert metrics["training_done"] and metrics["strategy"] == "MultiWorkerMirroredStrategy" and metrics["workers"] == 2
    assert [record["epoch"] for record in metrics["epochs"]] == [1]
    assert set(metrics["epochs"][0]["val"]) == {"auc", "gauc", "logloss"}
    assert np.isfinite(metrics["epochs"][0]["train_loss"])
    for name in ("params.json", "curves.png", "saved_model/saved_model.pb", "checkpoints/checkpoint"):
        assert (chief / name).exists(), name
    assert list((chief / "tensorboard").glob("events.out.tfevents.*"))
    assert not run_dirs[1].exists(), sorted(str(p) for p in run_dirs[1].rglob("*"))
    assert not any(scratch[1].iterdir()), "worker 1 left its temporary checkpoints behind"
    # Worker i of 2 reads train files i, i+2 (the reader's file_shard): disjoint halves of the 4 shards.
    assert [json.loads(path.read_text()) for path in shards] == [[["train", [0, 2]]], [["train", [1, 2]]]]

    # One global batch of TINY["batch_size"] per step: ceil(samples / batch) optimizer steps, on both workers.
    checkpoint = tf.train.latest_checkpoint(str(chief / "checkpoints"))
    assert optimizer_iterations(checkpoint) == math.ceil(TRAIN_SAMPLES / TINY["batch_size"])
    with np.load(weights[0]) as chief_weights, np.load(weights[1]) as worker_weights:
        assert len(chief_weights.files) == len(worker_weights.files) > 0
        for name in chief_weights.files:
            np.testing.assert_allclose(chief_weights[name], worker_weights[name], rtol=1e-6, atol=1e-7)


# --- the rules, without starting a cluster ----------------------------------------------

def test_without_tf_config_or_with_one_worker_nothing_starts():
    assert distribute.start_from_environment("cpu", environ={}) is None
    assert distribute.start_from_environment("cpu", environ={"TF_CONFIG": " "}) is None
    one = json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}})
    assert distribute.start_from_environment("cpu", environ={"TF_CONFIG": one}) is None


def test_tf_config_mistakes_are_input_errors():
    with pytest.raises(InputError, match="TF_CONFIG is not valid JSON"):
        distribute.start_from_environment("cpu", environ={"TF_CONFIG": "{cluster"})
    two = {"cluster": {"worker": ["a:1", "b:2"]}}
    with pytest.raises(InputError, match="no task"):
        distribute.start_from_environment("cpu", environ={"TF_CONFIG": json.dumps(two)})
    with pytest.raises(InputError, match="task index 2"):
        distribute.start_from_environment(
            "cpu", environ={"TF_CONFIG": json.dumps({**two, "task": {"type": "worker", "index": 2}})})
    with pytest.raises(InputError, match="task type 'ps' is not supported"):
        distribute.start_from_environment("cpu", environ={"TF_CONFIG": json.dumps(
            {"cluster": {**two["cluster"], "ps": ["c:3"]}, "task": {"type": "ps", "index": 0}})})


def test_the_npu_path_ignores_tf_config(capsys):
    two = json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}})
    assert distribute.start_from_environment("auto", environ={"TF_CONFIG": two},
                                             import_npu=lambda: types.ModuleType("npu_device")) is None
    assert distribute.start_from_environment("npu", environ={"TF_CONFIG": two}, import_npu=lambda: None) is None
    assert "the Ascend NPU path ignores it" in capsys.readouterr().out


def test_fewer_train_files_than_workers_and_an_indivisible_batch_are_refused(spec_path):
    from din_common.feature_spec import FeatureSpec

    spec = FeatureSpec.read(spec_path)
    check_files_per_process(spec, 4, "workers")
    with pytest.raises(InputError, match="4 TFRecord file.*5 workers.*num_shards"):
        check_files_per_process(spec, 5, "workers")
    cluster = distribute.Cluster(num_workers=3, task_type="worker", task_index=0, is_chief=True, position=0,
                                 strategy=types.SimpleNamespace(num_replicas_in_sync=3))
    assert distribute.per_replica_batch_size(96, cluster) == 32
    with pytest.raises(InputError, match="batch_size 64 is the global batch and must be divisible by the 3 replicas"):
        distribute.per_replica_batch_size(64, cluster)


def luigi_train_worker(data_dir: Path, addresses: list, index: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "TF_CONFIG": tf_config(addresses, index), "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "luigi", "--module", "pipeline", "TrainDIN", "--paths-data-dir", str(data_dir),
               "--raw-synthetic-users", "300", "--raw-synthetic-items", "200", "--raw-synthetic-categories", "10",
               "--preprocess-num-shards", "2", "--preprocess-maxlen", "5", "--preprocess-prebatch", "64",
               "--train-epochs", "1", "--train-batch-size", "128", "--train-embed-dim", "4",
               "--train-mlp-hidden", "8", "--train-attention-hidden", "8", "--train-device", "cpu", *extra]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory):
    """Stage 1 done once, as docs/scaling.md asks before a cluster starts."""
    data_dir = tmp_path_factory.mktemp("cluster") / "data"
    command = [sys.executable, "-m", "luigi", "--module", "pipeline", "Preprocess", "--paths-data-dir", str(data_dir),
               "--raw-synthetic-users", "300", "--raw-synthetic-items", "200", "--raw-synthetic-categories", "10",
               "--preprocess-num-shards", "2", "--preprocess-maxlen", "5", "--preprocess-prebatch", "64"]
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert finished.returncode == 0, finished.stderr[-2000:]
    return data_dir


@pytest.mark.slow
def test_two_workers_on_one_host_started_with_the_same_luigi_command_train_one_run(preprocessed):
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    workers = [luigi_train_worker(preprocessed, addresses, index) for index in range(2)]
    outputs = [worker.communicate(timeout=WORKER_TIMEOUT_S)[0] for worker in workers]
    for index, (worker, output) in enumerate(zip(workers, outputs)):
        assert worker_ended_well(worker, output, finished="\nran: "), \
            f"worker {index} exited {worker.returncode}:\n{output[-3000:]}"
        assert "already running" not in output
    (run_dir,) = [path for path in (preprocessed / "runs").iterdir() if not path.name.startswith(".")]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["strategy"], metrics["workers"], metrics["training_done"]) == ("MultiWorkerMirroredStrategy", 2,
                                                                                    True)
    assert not (preprocessed / "runs" / ".cluster").exists() or not any((preprocessed / "runs" / ".cluster").iterdir())


@pytest.mark.slow
def test_a_worker_whose_peer_never_starts_stops_with_an_error_naming_it(preprocessed):
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    started = time.perf_counter()
    worker = luigi_train_worker(preprocessed, addresses, 0, "--train-worker-timeout", "5", "--train-seed", "2")
    output = worker.communicate(timeout=WORKER_TIMEOUT_S)[0]
    assert worker.returncode == 30, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and f"worker 1 ({addresses[1]}) did not start within 5 s" in errors[0], output[-3000:]
    assert time.perf_counter() - started < 90


@pytest.mark.slow
def test_sigterm_stops_a_waiting_worker(preprocessed):
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    worker = luigi_train_worker(preprocessed, addresses, 1, "--train-worker-timeout", "600", "--train-seed", "3")
    rendezvous = preprocessed / "runs" / ".cluster"
    deadline = time.perf_counter() + 120
    while not list(rendezvous.glob("*/worker-1")) and time.perf_counter() < deadline:
        time.sleep(0.2)
    assert list(rendezvous.glob("*/worker-1")), "the worker never started waiting"
    worker.terminate()
    worker.communicate(timeout=20)
    assert worker.returncode in (-15, 143)


def test_an_abort_at_exit_is_accepted_only_on_an_old_tensorflow_after_the_run_finished(monkeypatch):
    import signal

    from tests.helpers import multiworker

    aborted = types.SimpleNamespace(returncode=-signal.SIGABRT)
    after_the_run = f"[train] epoch 1/1\n{multiworker.RETURNED_FROM_TRAINING}\n{multiworker.ABORT_AT_EXIT}\n"
    monkeypatch.setattr(multiworker, "TF_ABORTS_AT_EXIT", True)
    assert multiworker.worker_ended_well(types.SimpleNamespace(returncode=0), "")
    assert multiworker.worker_ended_well(aborted, after_the_run)
    assert not multiworker.worker_ended_well(aborted, f"[train] epoch 1/1\n{multiworker.ABORT_AT_EXIT}\n")
    assert not multiworker.worker_ended_well(types.SimpleNamespace(returncode=1), after_the_run)
    assert not multiworker.worker_ended_well(aborted, after_the_run + "Traceback (most recent call last):\n")
    monkeypatch.setattr(multiworker, "TF_ABORTS_AT_EXIT", False)
    assert not multiworker.worker_ended_well(aborted, after_the_run)
