"""The training state: model, optimizer and epoch counter, checkpointed together.

`TrainingState` builds the model for the feature spec and the device, wraps the optimizer
for the device, and keeps the checkpoint managers of a run: the latest epochs' checkpoints
(resume starts from the last) and, in `best/` beside them, the best epoch's (the one exported and
evaluated with `[train] restore_best`), each with the model's weights also under portable names
(din_model/train/portable_weights.py), so either stack reads them. A save that fills the disk removes
what it wrote (the temporary `ckpt-N_temp*` folder, partial `ckpt-N.*` files, the manager's temporary
state file) and is one error line naming the folder and the checkpoint's size; the run's state on disk
stays that of the last complete checkpoint, from which a rerun resumes.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import tensorflow as tf

from din_common.atomic import remove_file
from din_common.disk_full import reported_disk_full
from din_common.feature_spec import FeatureSpec
from din_model import compat
from din_model.device.selection import DeviceChoice
from din_model.model.footprint import weight_bytes
from din_model.model.network import build_model
from din_model.params import TrainParams
from din_model.train.optimizer import FusedAdam
from din_model.train.portable_weights import NODE as PORTABLE_WEIGHTS, WeightsByName
from din_model.train.run_files import BEST_CHECKPOINT_DIR, CHECKPOINT_NAME


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
        self.best_manager = tf.train.CheckpointManager(self.checkpoint, str(self.checkpoint_dir / BEST_CHECKPOINT_DIR),
                                                       max_to_keep=1, checkpoint_name=CHECKPOINT_NAME)
        self.checkpointed = 0  # the last epoch whose checkpoint is complete on disk
        self.checkpoint_size = weight_bytes(params, spec.n_items, spec.n_cats, params.maxlen or spec.maxlen)

    def restore_latest(self, checkpoint_dir: Optional[Path] = None) -> int:
        """Restore the last checkpoint of `checkpoint_dir` (default: this state's own; a cluster's other
        processes read the writer's) if there is one; return the number of epochs already done."""
        latest = tf.train.latest_checkpoint(str(checkpoint_dir or self.checkpoint_dir))
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        self.checkpointed = int(self.epoch.numpy())
        return self.checkpointed

    def checkpoint_path(self, epochs_done: int) -> str:
        """Where `save(epochs_done)` puts its checkpoint (the manager's naming)."""
        return str(self.checkpoint_dir / f"{CHECKPOINT_NAME}-{epochs_done}")

    def save(self, epochs_done: int) -> str:
        path = self._save(self.manager, self.checkpoint_dir, epochs_done, "the checkpoint", epochs_done - 1)
        self.checkpointed = epochs_done
        return path

    def save_best(self, epochs_done: int) -> str:
        """Keep the state after `epochs_done` (saved as the latest first) as the best epoch's checkpoint."""
        return self._save(self.best_manager, self.checkpoint_dir / BEST_CHECKPOINT_DIR, epochs_done,
                          "the best epoch's checkpoint", epochs_done)

    def _save(self, manager, directory: Path, epochs_done: int, what: str, resumes_after: int) -> str:
        self.epoch.assign(epochs_done)
        resume = f"it resumes after epoch {resumes_after}" if resumes_after else "it starts the run again"
        with reported_disk_full(f"{what} of epoch {epochs_done}", directory, self.checkpoint_size,
                                cleanup=lambda: _remove_partial_checkpoint(directory, epochs_done),
                                rerun=f"rerun the same command ({resume})"):
            return manager.save(checkpoint_number=epochs_done)

    def holds_best(self, epochs_done: int) -> bool:
        """The best checkpoint is that of epoch `epochs_done`."""
        return self.best_manager.latest_checkpoint == str(self.checkpoint_dir / BEST_CHECKPOINT_DIR /
                                                          f"{CHECKPOINT_NAME}-{epochs_done}")

    def checkpoint_to_export(self, restore_best: bool) -> str | None:
        """The checkpoint a finished run exports and evaluates: the best epoch's with `restore_best` (when one was
        kept), else the latest."""
        return (restore_best and self.best_manager.latest_checkpoint) or self.manager.latest_checkpoint


def _remove_partial_checkpoint(directory: Path, epochs_done: int) -> None:
    """What a failed save of checkpoint `epochs_done` may leave in `directory`: its temporary folder (TF 2.6
    names it `ckpt-N_temp_<uuid>`, later versions `ckpt-N_temp`), its data and index files (or their
    `.tempstate` temporaries) and the manager's temporary `checkpoint.tmp<uuid>` state file."""
    prefix = f"{CHECKPOINT_NAME}-{epochs_done}"
    for path in directory.glob("*"):
        if path.name.startswith(prefix + "_temp") and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith((prefix + ".", "checkpoint.tmp")):
            remove_file(path)
