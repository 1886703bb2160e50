"""Multi-worker data-parallel training driven by the `TF_CONFIG` environment variable.

Owns: reading `TF_CONFIG`, starting `tf.distribute.MultiWorkerMirroredStrategy` when it
names more than one worker (CPU/GPU path), each worker's part of the train split, the
distributed train step, and the multi-worker version of the training loop
(`train_multi_worker`, called by `din_model.training.train`). Without `TF_CONFIG`, or
with a single worker, `start_from_environment` returns None and nothing here runs.

- Workers: the "chief" task (if the cluster has one) and the "worker" tasks. The chief
  is the "chief" task, else worker 0. Worker i of n reads the train shard files
  i, i+n, ... (`make_dataset(file_shard=...)`, tf.data auto-sharding OFF).
- The global batch stays `[train] batch_size`; each replica gets batch_size / replicas
  (one replica per worker on CPU). Each worker repeats its own files and every worker
  runs the same number of steps per epoch, ceil(train samples / batch_size), so no
  worker waits for a batch another one does not have.
- Gradients are summed over replicas by the optimizer; each replica scales its loss by
  1 / replicas, so the update is the one of the global batch mean. The Dice moving
  statistics (non-trainable, like unsynchronised batch norm) stay per worker; the
  chief's are the ones checkpointed and exported.
- Only the chief writes into the run directory (params.json, metrics.json,
  checkpoints/, tensorboard/, saved_model/, curves.png) and evaluates val (the whole
  split). The other workers restore from the chief's checkpoints and save theirs
  (TF needs every worker to take part in a save) into a temporary directory outside the
  run directory, removed at the end.
- The Ascend NPU path keeps single-device training whatever `TF_CONFIG` says
  (docs/scaling.md says how HCCL distribution would map onto this code).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import shutil
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import tensorflow as tf

from din_common.atomic import write_json_atomic
from din_common.errors import InputError
from din_common.faults import kill_point
from din_model import compat
from din_model.device import select_device
from din_model.params import TrainParams
from din_model.reader import iterate_checked, load_spec, make_dataset, split_files

TF_CONFIG_VARIABLE = "TF_CONFIG"
WORKER_TASK_TYPES = ("chief", "worker")
STRATEGY_NAME = "MultiWorkerMirroredStrategy"


@dataclasses.dataclass
class Cluster:
    """This process's place in a multi-worker cluster and its strategy."""

    num_workers: int
    task_type: str
    task_index: int
    is_chief: bool
    position: int                     # among the workers, the chief task first: its files are position::num_workers
    strategy: Any = None
    scratch_dir: Path | None = None   # non-chief only: where its checkpoints go, removed at the end

    def describe(self) -> str:
        chief = " (chief)" if self.is_chief and self.task_type != "chief" else ""
        return (f"[train] {STRATEGY_NAME}: {self.num_workers} workers, "
                f"this is {self.task_type} {self.task_index}{chief}")


# --- TF_CONFIG -------------------------------------------------------------------------

def read_tf_config(environ: Mapping[str, str] = os.environ) -> dict | None:
    """The parsed `TF_CONFIG`, or None when it is unset or empty; a malformed one is an InputError."""
    text = environ.get(TF_CONFIG_VARIABLE, "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{TF_CONFIG_VARIABLE} is not valid JSON ({error}); expected "
                         '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
                         ) from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster", {}), dict):
        raise InputError(f"{TF_CONFIG_VARIABLE} must be a JSON object with a \"cluster\" object, got {text[:200]}")
    return config


def count_workers(config: dict | None) -> int:
    """Training processes the cluster names: its chief and worker tasks."""
    if not config:
        return 0
    cluster = config.get("cluster", {})
    return sum(len(cluster.get(task_type, [])) for task_type in WORKER_TASK_TYPES)


def _task_of(config: dict) -> tuple[str, int]:
    task = config.get("task")
    cluster = config["cluster"]
    if not isinstance(task, dict) or "type" not in task:
        raise InputError(f"{TF_CONFIG_VARIABLE} names a cluster but no task; add "
                         '"task": {"type": "worker", "index": <this machine\'s position in the worker list>}')
    task_type, task_index = task["type"], task.get("index", 0)
    if task_type not in WORKER_TASK_TYPES:
        unsupported = sorted(set(cluster) - set(WORKER_TASK_TYPES))
        raise InputError(f"{TF_CONFIG_VARIABLE} task type {task_type!r} is not supported: training runs on "
                         f"\"chief\" and \"worker\" tasks only (MultiWorkerMirroredStrategy)"
                         + (f"; the cluster also names {unsupported}" if unsupported else ""))
    if not isinstance(task_index, int) or not 0 <= task_index < len(cluster.get(task_type, [])):
        raise InputError(f"{TF_CONFIG_VARIABLE} task index {task_index!r} is not a position in its "
                         f"cluster's {task_type!r} list {cluster.get(task_type, [])}")
    return task_type, task_index


def _npu_selected(requested_device: str, import_npu: Callable[[], Any]) -> bool:
    """Would `select_device` pick the Ascend NPU? (imports the adapter, opens nothing)."""
    return requested_device == "npu" or (requested_device == "auto" and import_npu() is not None)


def start_from_environment(requested_device: str, *, environ: Mapping[str, str] = os.environ,
                           import_npu: Callable[[], Any] | None = None) -> Cluster | None:
    """The Cluster of this process when `TF_CONFIG` names more than one worker, else None.

    Creates the MultiWorkerMirroredStrategy, so it must run before any other TF op in the
    process (the strategy sets up the collective ops). On the NPU path it returns None:
    that path trains on one device (see docs/scaling.md).
    """
    config = read_tf_config(environ)
    num_workers = count_workers(config)
    if num_workers <= 1:
        return None
    if import_npu is None:
        from din_model.device import _import_npu_device as import_npu
    if _npu_selected(requested_device, import_npu):
        print(f"[train] {TF_CONFIG_VARIABLE} names {num_workers} workers, but the Ascend NPU path trains on a "
              "single device here (HCCL distribution is not wired in; see docs/scaling.md)", flush=True)
        return None
    task_type, task_index = _task_of(config)
    is_chief = task_type == "chief" or (task_index == 0 and not config["cluster"].get("chief"))
    if requested_device == "cpu" and tf.config.list_physical_devices("GPU"):
        # [train] device = cpu: the strategy would otherwise put its replicas on the GPUs.
        tf.config.set_visible_devices([], "GPU")
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver())
    has_chief_task = bool(config["cluster"].get("chief"))
    position = 0 if task_type == "chief" else task_index + (1 if has_chief_task else 0)
    cluster = Cluster(num_workers=num_workers, task_type=task_type, task_index=task_index, is_chief=is_chief,
                      position=position, strategy=strategy)
    print(cluster.describe(), flush=True)
    return cluster


# --- data -------------------------------------------------------------------------------

def check_train_files(spec: dict, num_workers: int) -> None:
    files = split_files(spec, "train")
    if len(files) < num_workers:
        raise InputError(f"the train split has {len(files)} TFRecord file(s) for {num_workers} workers; each worker "
                         "reads its own files, so set [preprocess] num_shards to at least the number of workers "
                         "(or run fewer workers)")


def per_replica_batch_size(batch_size: int, cluster: Cluster) -> int:
    replicas = cluster.strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise InputError(f"[train] batch_size {batch_size} is the global batch and must be divisible by the "
                         f"{replicas} replicas of the cluster ({cluster.num_workers} workers); "
                         f"e.g. {max(replicas, batch_size // replicas * replicas)}")
    return batch_size // replicas


def steps_per_epoch(spec: dict, batch_size: int) -> int:
    """Global steps of one epoch: every worker runs this many, so none waits on a missing batch."""
    return max(1, math.ceil(int(spec["splits"]["train"].get("samples", 0)) / batch_size))


def distributed_train_dataset(cluster: Cluster, spec: dict, params: TrainParams, *,
                              seed: int) -> tf.distribute.DistributedDataset:
    """This worker's files (i, i+n, ...), repeated without end, in full per-replica batches.

    The dataset is declared infinite, so the distributed iterator needs no cross-worker
    "is there more data" check per step; the caller takes `steps_per_epoch` steps.
    """
    strategy = cluster.strategy
    batch = per_replica_batch_size(params.batch_size, cluster)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        dataset = make_dataset(spec, "train", batch, shuffle=True, seed=seed, drop_remainder=True,
                               maxlen=params.maxlen, repeat=True,
                               file_shard=(context.input_pipeline_id, context.num_input_pipelines))
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
        return dataset.with_options(options)

    return strategy.distribute_datasets_from_function(dataset_fn)


# --- the train step and cross-worker checks ---------------------------------------------

def make_train_step(strategy, model, optimizer, jit_compile: bool):
    """A `tf.function` (features, labels) -> global mean loss: one synchronous step on every replica."""
    variables = model.trainable_variables
    replicas = strategy.num_replicas_in_sync

    def loss_and_gradients(features, labels):
        with tf.GradientTape() as tape:
            logits = model(features, training=True)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
            loss += model.regularization_loss(features)
            # The optimizer sums the gradients over replicas: scaling by 1/replicas gives the global mean.
            scaled_loss = compat.scale_loss(optimizer, loss / replicas)
        return loss, tape.gradient(scaled_loss, variables)

    if jit_compile:  # XLA for the local forward/backward; the all-reduce stays outside the cluster
        loss_and_gradients = compat.function(loss_and_gradients, jit_compile=True)

    def replica_step(features, labels):
        loss, gradients = loss_and_gradients(features, labels)
        compat.apply_gradients(optimizer, gradients, variables)
        return loss

    @compat.function
    def train_step(features, labels):
        losses = strategy.run(replica_step, args=(features, labels))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, losses, axis=None)

    return train_step


def _sum_over_replicas(strategy, values: list[float]) -> np.ndarray:
    @tf.function
    def reduce():
        per_replica = strategy.run(lambda: tf.constant(values, tf.float64))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return reduce().numpy()


def agree_on(cluster: Cluster, value: int, what: str) -> None:
    """InputError on every worker unless all workers hold the same `value` (also a barrier)."""
    total, squares, count = _sum_over_replicas(cluster.strategy, [float(value), float(value) ** 2, 1.0])
    if squares * count != total * total:  # equal only when every value is the same
        raise InputError(f"the workers disagree on {what} (this is {cluster.task_type} {cluster.task_index} with "
                         f"{value}, mean over workers {total / count:g}); every worker must see the same run "
                         "directory (put [paths] data_dir on storage shared by all machines)")


def barrier(cluster: Cluster) -> None:
    """Returns once every worker has reached it."""
    _sum_over_replicas(cluster.strategy, [1.0])


def restore_from(state, checkpoint_dir: Path) -> int:
    """Restore the latest checkpoint of `checkpoint_dir` (the chief's) into `state`; return its epoch."""
    latest = tf.train.latest_checkpoint(str(checkpoint_dir))
    if latest:
        state.checkpoint.restore(latest).assert_existing_objects_matched()
    return int(state.epoch.numpy())


# --- the loop ---------------------------------------------------------------------------

def run_epoch(cluster: Cluster, train_step, spec: dict, params: TrainParams, epoch: int, steps: int,
              checkpoints, report: Callable[[int], None]) -> tuple[float, float]:
    """Train one epoch (1-based) on this worker's part; return (mean global loss, global samples per second)."""
    from din_model.training import PROGRESS_EVERY_STEPS, _diverged

    dataset = distributed_train_dataset(cluster, spec, params, seed=params.seed * 1000 + epoch)
    files = split_files(spec, "train")[cluster.position::cluster.num_workers]
    loss_sum, done = 0.0, 0
    started = time.perf_counter()
    for features, labels in itertools.islice(iterate_checked(dataset, files), steps):
        loss = float(train_step(features, labels))  # the same reduced value on every worker
        done += 1
        if not np.isfinite(loss):
            raise _diverged(loss, epoch, done, checkpoints, params)
        loss_sum += loss
        kill_point(f"train:epoch{epoch}:step{done}")
        if done % PROGRESS_EVERY_STEPS == 0:
            report(done * params.batch_size)
    elapsed = time.perf_counter() - started
    if done == 0:
        raise InputError(f"the train files of {cluster.task_type} {cluster.task_index} yield no batch")
    return loss_sum / done, done * params.batch_size / elapsed


def _cluster_fields(cluster: Cluster) -> dict:
    return {"strategy": STRATEGY_NAME, "workers": cluster.num_workers}


def train_multi_worker(cluster: Cluster, spec_path, run_dir, params: TrainParams, *,
                       progress_callback=None) -> dict:
    """`training.train` on a cluster: same run directory, written by the chief only."""
    from din_model import training
    from din_model.export import export_saved_model

    spec = load_spec(spec_path)
    files = training.RunFiles(run_dir)
    training._check_params_of_run(files, params)
    device = select_device(params.device, params.precision)
    check_train_files(spec, cluster.num_workers)
    per_replica_batch_size(params.batch_size, cluster)
    if cluster.is_chief:
        write_json_atomic(files.params, {"params": params.to_dict(), "tfrecord_fingerprint": spec.get("fingerprint")})
    else:
        cluster.scratch_dir = Path(tempfile.mkdtemp(prefix=f"din-{cluster.task_type}{cluster.task_index}-"))
    compat.set_random_seed(params.seed)
    maxlen = params.maxlen or int(spec["maxlen"])
    steps = steps_per_epoch(spec, params.batch_size)
    try:
        with cluster.strategy.scope():
            # Creating a variable is collective (its initial value is broadcast), so every worker creates
            # the same ones in the same order: the checkpoint's save counter too, which a restore or the
            # first save would otherwise create on some workers only.
            if cluster.is_chief:
                state = training.TrainingState(params, spec, device, files.checkpoints)
                state.checkpoint.save_counter  # noqa: B018
                done = state.restore_latest()
                checkpoints = state.manager
            else:
                state = training.TrainingState(params, spec, device, cluster.scratch_dir / "checkpoints")
                state.checkpoint.save_counter  # noqa: B018
                done = restore_from(state, files.checkpoints)
                chief_latest = tf.train.latest_checkpoint(str(files.checkpoints))
                checkpoints = types.SimpleNamespace(latest_checkpoint=chief_latest)  # named in error messages
            agree_on(cluster, done, "the epochs already done in the run directory")
            epochs = ([record for record in training.read_metrics(files.metrics).get("epochs", [])
                       if record["epoch"] <= done] if cluster.is_chief else [])
            if done:
                print(f"[train] resuming {files.root} after epoch {done}", flush=True)
            train_step = make_train_step(cluster.strategy, state.model, state.optimizer, params.jit_compile)
            role = training.EpochRole(
                run_epoch=lambda epoch, report: run_epoch(cluster, train_step, spec, params, epoch, steps,
                                                          checkpoints, report),
                writes_run_dir=cluster.is_chief, metrics_fields=_cluster_fields(cluster),
                progress_label=f", {cluster.task_type} {cluster.task_index}; samples/s of all workers")
            # Every worker saves (saving is collective); the non-chief ones into scratch_dir.
            training.train_epochs(state, files, spec, params, device, done, epochs, role, progress_callback)
            if cluster.is_chief:
                export_saved_model(state.model, maxlen, files.saved_model)
        if cluster.is_chief:
            training.finish_run(state, files, spec, params, device, epochs, _cluster_fields(cluster))
        barrier(cluster)  # the others leave once the chief's outputs are complete
        if cluster.is_chief:
            return training.read_metrics(files.metrics)
        return training._metrics_document(device, params, spec, epochs, done=True, checkpoint=None)
    finally:
        if cluster.scratch_dir is not None:
            shutil.rmtree(cluster.scratch_dir, ignore_errors=True)
            cluster.scratch_dir = None
