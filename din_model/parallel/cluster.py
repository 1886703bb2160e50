"""Multi-worker data-parallel training driven by the `TF_CONFIG` environment variable.

Owns: starting `tf.distribute.MultiWorkerMirroredStrategy` when `TF_CONFIG` (parsed by
din_common/tf_config.py) names more than one worker (CPU/GPU path), and `Cluster`, this worker's part in
the one training loop (din_model/run/loop.py, din_model/parallel/placement.py): its part of the
train split, the distributed train step, agreement and barriers between workers. Without
`TF_CONFIG`, or with a single worker, `start_from_environment` returns None.

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
- The Ascend NPU path ignores `TF_CONFIG`: several NPUs train as NPU ranks
  (din_model/parallel/npu_ranks.py, the adapter's HCCL collectives).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import tensorflow as tf

from din_common import tf_config
from din_common.feature_spec import FeatureSpec
from din_model import compat
from din_model.parallel.cluster_join import exit_on_sigterm, leave, wait_for_workers
from din_model.params import TrainParams
from din_model.parallel.placement import (Placement, check_files_per_process, epoch_seed, fixed_steps,
                                          per_process_batch_size, steps_per_epoch)
from din_model.data.reader import iterate_checked, make_dataset, split_files
from din_model.train import steps
from din_model.train.run_files import RunFiles
from din_model.train.state import TrainingState

STRATEGY_NAME = "MultiWorkerMirroredStrategy"
DEFAULT_WORKER_TIMEOUT_S = 300.0


@dataclasses.dataclass
class Cluster(Placement):
    """This process's place in a multi-worker cluster and its strategy (a `Placement` of the training loop)."""

    num_workers: int
    task_type: str
    task_index: int
    is_chief: bool
    position: int                     # among the workers, the chief task first: its files are position::num_workers
    strategy: Any = None
    scratch_dir: Path | None = None   # non-chief only: where its checkpoints go, removed at the end
    announcement: Path | None = None  # this worker's file in the cluster's rendezvous directory

    def banner(self) -> str:
        chief = " (chief)" if self.is_chief and self.task_type != "chief" else ""
        return (f"[train] {STRATEGY_NAME}: {self.num_workers} workers, "
                f"this is {self.task_type} {self.task_index}{chief}")

    # -- the Placement interface --------------------------------------------------------------
    @property
    def writes_run_dir(self) -> bool:
        return self.is_chief

    @property
    def progress_label(self) -> str:
        return f", {self.task_type} {self.task_index}; samples/s of all workers"

    def describe(self) -> dict:
        return {"strategy": STRATEGY_NAME, "workers": self.num_workers}

    def check(self, spec: FeatureSpec, params: TrainParams) -> None:
        check_files_per_process(spec, self.num_workers, "workers")
        per_replica_batch_size(params.batch_size, self)

    def scope(self, device):
        return self.strategy.scope()

    def checkpoint_dir(self, files: RunFiles) -> Path:
        if self.is_chief:
            return files.checkpoints
        # Saving is collective: the other workers save too, into a directory of their own.
        self.scratch_dir = Path(tempfile.mkdtemp(prefix=f"din-{self.task_type}{self.task_index}-"))
        return self.scratch_dir / "checkpoints"

    def restore(self, state: TrainingState, files: RunFiles) -> int:
        # Creating a variable is collective (its initial value is broadcast), so every worker creates
        # the same ones in the same order: the checkpoint's save counter too, which a restore or the
        # first save would otherwise create on some workers only.
        state.checkpoint.save_counter  # noqa: B018
        done = state.restore_latest(files.checkpoints)  # the chief's own, read by the others too
        self.agree_on(done, "the epochs already done in the run directory")
        return done

    def make_train_step(self, state: TrainingState, params: TrainParams, signature):
        return make_train_step(self.strategy, state.model, state.optimizer, params.jit_compile)

    def epoch_batches(self, spec: FeatureSpec, params: TrainParams, device, epoch: int):
        dataset = distributed_train_dataset(self, spec, params, seed=epoch_seed(params, epoch))
        files = split_files(spec, "train")[self.position::self.num_workers]
        return fixed_steps(iterate_checked(dataset, files), steps_per_epoch(spec, params.batch_size))

    def samples_in(self, labels, params: TrainParams) -> int:
        return params.batch_size  # labels are per replica; every step is one global batch

    def steps_per_call(self, device) -> int:
        return 1  # a step's collectives run per call of the strategy's step, as the other workers expect

    process_kind = "workers"

    @property
    def processes(self) -> int:
        return self.num_workers

    @property
    def this_process(self) -> str:
        return f"{self.task_type} {self.task_index}"

    def sum_over_processes(self, values: list) -> np.ndarray:
        return _sum_over_replicas(self.strategy, values)

    def close(self) -> None:
        if self.announcement is not None:
            leave(self.announcement)
            self.announcement = None
        if self.scratch_dir is not None:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)
            self.scratch_dir = None


def _npu_selected(requested_device: str, import_npu: Callable[[], Any]) -> bool:
    """Would `select_device` pick the Ascend NPU? (imports the adapter, opens nothing)."""
    return requested_device == "npu" or (requested_device == "auto" and import_npu() is not None)


def start_from_environment(requested_device: str, *, environ: Mapping[str, str] = os.environ,
                           import_npu: Callable[[], Any] | None = None, rendezvous_dir: Path | None = None,
                           worker_timeout: float = DEFAULT_WORKER_TIMEOUT_S) -> Cluster | None:
    """The Cluster of this process when `TF_CONFIG` names more than one worker, else None.

    Creates the MultiWorkerMirroredStrategy, so it must run before any other TF op in the
    process (the strategy sets up the collective ops); with `rendezvous_dir`, only once
    every worker has started (din_model/parallel/cluster_join.py), else an InputError after
    `worker_timeout` seconds. On the NPU path it returns None: several NPUs train as NPU
    ranks instead (din_model/parallel/npu_ranks.py).
    """
    config = tf_config.read(environ)
    num_workers = tf_config.count_workers(config)
    if num_workers <= 1:
        return None
    if import_npu is None:
        from din_model.device.selection import _import_npu_device as import_npu
    if _npu_selected(requested_device, import_npu):
        print(f"[train] {tf_config.VARIABLE} names {num_workers} workers, but the Ascend NPU path ignores it: "
              "train on several NPUs with [npu] devices (NPU ranks, docs/ascend.md)", flush=True)
        return None
    task_type, task_index = tf_config.task_of(config)
    is_chief = task_type == "chief" or (task_index == 0 and not config["cluster"].get("chief"))
    if requested_device == "cpu" and tf.config.list_physical_devices("GPU"):
        # [train] device = cpu: the strategy would otherwise put its replicas on the GPUs.
        tf.config.set_visible_devices([], "GPU")
    announcement = None
    if rendezvous_dir is not None:
        tasks = [(kind, index) for kind in tf_config.WORKER_TASK_TYPES
                 for index in range(len(config["cluster"].get(kind, [])))]
        announcement = wait_for_workers(config["cluster"], tasks, (task_type, task_index), rendezvous_dir,
                                     worker_timeout)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver())
    exit_on_sigterm(f"{task_type} {task_index}")  # after the constructor: it installs TensorFlow's own handler
    has_chief_task = bool(config["cluster"].get("chief"))
    position = 0 if task_type == "chief" else task_index + (1 if has_chief_task else 0)
    cluster = Cluster(num_workers=num_workers, task_type=task_type, task_index=task_index, is_chief=is_chief,
                      position=position, strategy=strategy, announcement=announcement)
    print(cluster.banner(), flush=True)
    return cluster


# --- data -------------------------------------------------------------------------------

def per_replica_batch_size(batch_size: int, cluster: Cluster) -> int:
    replicas = cluster.strategy.num_replicas_in_sync
    return per_process_batch_size(batch_size, replicas, f"replicas of the cluster ({cluster.num_workers} workers)")


def distributed_train_dataset(cluster: Cluster, spec: FeatureSpec, params: TrainParams, *,
                              seed: int) -> tf.distribute.DistributedDataset:
    """This worker's files (i, i+n, ...), repeated without end, in full per-replica batches.

    The dataset is declared infinite, so the distributed iterator needs no cross-worker
    "is there more data" check per step; the caller takes `steps_per_epoch` steps.
    """
    strategy = cluster.strategy
    batch = per_replica_batch_size(params.batch_size, cluster)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        dataset = make_dataset(spec, "train", batch, shuffle=True, seed=seed, drop_remainder=True,
                               maxlen=params.maxlen, repeat=True, history_fields=params.history_features,
                               file_shard=(context.input_pipeline_id, context.num_input_pipelines),
                               ordered=params.deterministic)
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
            loss = steps.loss(model, features, labels)
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
