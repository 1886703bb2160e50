"""One run's directory layout and its training state: model, optimizer, checkpoints, compiled steps.

- `RunFiles`: the paths of a run directory (`params.json checkpoints/ saved_model/
  tensorboard/ metrics.json curves.png`); `read_metrics`.
- `TrainingState`: model, optimizer and epoch counter, checkpointed together (with the
  model's weights also under portable names, din_model/portable_weights.py).
- `make_train_step` / `make_predict_step`: the compiled steps; `step_signature` the
  batches they take; `make_step_loop` several train steps in one call.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from din_common.errors import InputError
from din_model import compat
from din_model.device import DeviceChoice
from din_model.model import build_model
from din_model.optimizer import FusedAdam
from din_model.params import TrainParams
from din_model.portable_weights import NODE as PORTABLE_WEIGHTS, WeightsByName
from din_model.reader import batch_signature, effective_maxlen

CHECKPOINT_NAME = "ckpt"


class RunFiles:
    """Paths inside one run directory."""

    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir)
        self.params = self.root / "params.json"
        self.checkpoints = self.root / "checkpoints"
        self.saved_model = self.root / "saved_model"
        self.tensorboard = self.root / "tensorboard"
        self.metrics = self.root / "metrics.json"
        self.curves = self.root / "curves.png"


def read_metrics(path: str | Path) -> dict:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


class TrainingState:
    """Model, optimizer and epoch counter, checkpointed together."""

    def __init__(self, params: TrainParams, spec: dict, device: DeviceChoice, checkpoint_dir: Path):
        self.model = build_model(params, spec, device.dtype_policy, device.static_shapes, on_npu=device.name == "npu")
        optimizer = device.wrap_optimizer(FusedAdam(learning_rate=params.learning_rate))
        compat.build_optimizer(optimizer, self.model.trainable_variables)
        self.optimizer = optimizer
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=optimizer, epoch=self.epoch,
                                              **{PORTABLE_WEIGHTS: WeightsByName(self.model.named_weights())})
        self.checkpoint_dir = Path(checkpoint_dir)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(checkpoint_dir), max_to_keep=3,
                                                  checkpoint_name=CHECKPOINT_NAME)

    def restore_latest(self, checkpoint_dir: Optional[Path] = None) -> int:
        """Restore the last checkpoint of `checkpoint_dir` (default: this state's own; a cluster's other
        processes read the writer's) if there is one; return the number of epochs already done."""
        latest = tf.train.latest_checkpoint(str(checkpoint_dir or self.checkpoint_dir))
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        return int(self.epoch.numpy())

    def checkpoint_path(self, epochs_done: int) -> str:
        """Where `save(epochs_done)` puts its checkpoint (the manager's naming)."""
        return str(self.checkpoint_dir / f"{CHECKPOINT_NAME}-{epochs_done}")

    def save(self, epochs_done: int) -> str:
        self.epoch.assign(epochs_done)
        return self.manager.save(checkpoint_number=epochs_done)


def make_train_step(model, optimizer, jit_compile: bool, signature=None,
                    reduce_gradients: Optional[Callable[[list], list]] = None):
    """The compiled train step; `signature` (`batch_signature`) makes it trace once, not again
    for the last, smaller batch of an epoch (~1.3 s of the first epoch on the default data).
    `reduce_gradients` (NPU ranks: the adapter's all-reduce) combines the processes' gradients
    before the update."""
    variables = model.trainable_variables

    @compat.function(jit_compile=jit_compile, input_signature=signature)
    def train_step(features, labels):
        with tf.GradientTape() as tape:
            logits = model(features, training=True)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
            loss += model.regularization_loss(features)
            scaled_loss = compat.scale_loss(optimizer, loss)
        # Keras' Adam densifies a sparse (embedding) gradient once per use, twice a step;
        # doing it here once is ~2 % of a CPU step.
        gradients = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                     for g in tape.gradient(scaled_loss, variables)]
        if reduce_gradients is not None:
            gradients = reduce_gradients(gradients)
        compat.apply_gradients(optimizer, gradients, variables)
        return loss

    return train_step


# Train steps one call of `make_step_loop`'s function runs. Returning to Python between steps
# (the call, its arguments, the loss read back) cost 4-12 % of an XLA-compiled reference-preset
# step on a 2-core CPU (benchmarks/train.py --xla on --steps-per-call 1 vs 16, alternating runs).
STEPS_PER_CALL = 16


def make_step_loop(train_step, steps: int = STEPS_PER_CALL, *, sunk: bool = False):
    """Several train steps in one graph call, on an iterator's batches; no Python between steps.

    `run(iterator) -> (losses [n], samples)`: up to `steps` steps, their losses and the rows they
    trained on; n < steps only at the end of the data (0 once it is exhausted).

    `sunk` (the NPU): `run(iterator, count) -> losses [count]` runs exactly `count` <= `steps` steps, in
    the form the Ascend adapter sinks into one graph-engine loop (`npu_device.set_npu_loop_size(count)`
    first): one while loop taking `next(iterator)`, which every other op of the function feeds
    (tf_adapter_2.x/npu_device/core/npu_utils.cpp `IsGraphNeedLoop`). The adapter then runs the loop
    body `count` times with the loop's own counter left at its start, so each step's loss goes to the
    slot a variable counter names in a variable of `steps` losses, which the host reads once per call.
    """
    def one_step(iterator_element):
        features, labels = iterator_element
        return tf.cast(train_step(features, labels), tf.float32), tf.shape(labels)[0]

    if sunk:
        return _SunkStepLoop(one_step, steps)

    @tf.function
    def run(iterator):
        losses = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        samples = tf.constant(0)
        for index in tf.range(steps):
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                break
            loss, rows = one_step(batch.get_value())
            losses = losses.write(index, loss)
            samples += rows
        return losses.stack(), samples

    return run


class _SunkStepLoop:
    """`make_step_loop(..., sunk=True)`: the loop function and its two variables."""

    def __init__(self, one_step, steps: int):
        self.steps = steps
        self.losses = tf.Variable(tf.zeros([steps]), trainable=False, name="loop_losses")
        self.steps_run = tf.Variable(0, trainable=False, name="loop_steps_run")
        self.host_steps_run = 0  # the variable's value, known without reading it back

        @tf.function
        def loop(iterator, count):
            # a counted while, not `for _ in tf.range(count)`: AutoGraph computes that loop's length in
            # ops the loop does not use, which would stop the adapter from sinking it
            done = tf.constant(0)
            while done < count:
                done += 1
                loss, _ = one_step(next(iterator))
                slot = tf.equal(tf.range(steps), self.steps_run % steps)
                self.losses.assign(tf.where(slot, loss, self.losses))
                self.steps_run.assign_add(1)

        self.loop = loop

    def __call__(self, iterator, count: int) -> np.ndarray:
        if not 1 <= count <= self.steps:
            raise ValueError(f"a sunk step loop of {self.steps} steps cannot run {count}")
        first_slot = self.host_steps_run % self.steps
        self.loop(iterator, tf.constant(count))
        self.host_steps_run += count
        return np.roll(self.losses.numpy(), -first_slot)[:count]  # the call's one read back to the host


def make_predict_step(model, signature=None):
    features_signature = None if signature is None else [signature[0]]

    @compat.function(input_signature=features_signature)
    def predict_step(features):
        return tf.sigmoid(model(features, training=False))

    return predict_step


def step_signature(spec: dict, params: TrainParams, device: DeviceChoice):
    """The batches the steps get: any number of rows, or exactly batch_size (static shapes, padded eval)."""
    return batch_signature(effective_maxlen(spec, params.maxlen),
                           params.batch_size if fixed_batches(params, device) else None, params.history_features)


# XLA's compile takes ~2.7 s more than tracing the plain step (default preset: `benchmarks/train.py
# --preset default --xla on|off`, first_call_s 5.1-5.3 vs 2.45 s) and saves ~8 ms a step (79-80 k vs
# 67-70 k samples/s), so it is repaid after ~330 steps; `auto` asks for 1.5x that.
XLA_MIN_STEPS = 512


def resolve_xla(params: TrainParams, device: DeviceChoice, spec: dict, *, one_process: bool = True) -> TrainParams:
    """`params` with `jit_compile` set from `[train] xla`: "on", "off", or "auto": on for one process on a
    CPU on the modern stack when the run trains at least XLA_MIN_STEPS full batches, off elsewhere
    (clusters of workers were not measured with it).

    On a 2-core CPU with TF 2.21 the XLA step (static-capacity layout) trained the reference and default
    presets 1.2-1.3x faster than the plain one (docs/static_path.md); TF 2.6's XLA compiles the same
    step into code ~100x slower; GPUs were not measured. XLA steps take fixed-size batches, so an
    epoch leaves out its last partial batch (a different one each epoch, as the data is reshuffled).
    """
    if params.xla == "on" and device.name == "npu":
        raise InputError("[train] xla = on: the NPU compiles its graphs itself; set [train] xla = auto or off")
    if params.xla != "auto":
        return dataclasses.replace(params, jit_compile=params.xla == "on")
    full_batches = int(spec["splits"]["train"].get("samples", 0)) // params.batch_size
    worth_compiling = full_batches * params.epochs >= XLA_MIN_STEPS
    return dataclasses.replace(params, jit_compile=device.name == "cpu" and compat.KERAS_3 and worth_compiling
                               and one_process)


def fixed_batches(params: TrainParams, device: DeviceChoice) -> bool:
    """Every batch has exactly batch_size rows: the NPU compiles one graph per shape, and XLA needs the
    batch size when it traces the step (so the last, smaller batch of an epoch is dropped)."""
    return device.static_shapes or params.jit_compile
