"""The training state: model, optimizer and epoch counter, checkpointed together.

`TrainingState` builds the model for the feature spec and the device, wraps the optimizer
for the device, and keeps the checkpoint manager of a run's checkpoints (with the model's
weights also under portable names, din_model/train/portable_weights.py, so either stack
reads them).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import tensorflow as tf

from din_common.feature_spec import FeatureSpec
from din_model import compat
from din_model.device.selection import DeviceChoice
from din_model.model.network import build_model
from din_model.params import TrainParams
from din_model.train.optimizer import FusedAdam
from din_model.train.portable_weights import NODE as PORTABLE_WEIGHTS, WeightsByName
from din_model.train.run_files import CHECKPOINT_NAME


class TrainingState:
    """Model, optimizer and epoch counter, checkpointed together."""

    def __init__(self, params: TrainParams, spec: FeatureSpec, device: DeviceChoice, checkpoint_dir: Path):
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
