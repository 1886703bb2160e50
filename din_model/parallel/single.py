"""A training process on its own: CPU, one GPU or one NPU.

`SingleProcess` trains on the whole train split, restores and saves its own checkpoints and
writes the run directory; its "collectives" are the identity.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from din_common.feature_spec import FeatureSpec
from din_model.device.selection import DeviceChoice
from din_model.params import TrainParams
from din_model.parallel.placement import Placement, epoch_dataset
from din_model.data.reader import iterate_checked, split_files
from din_model.train import steps
from din_model.train.run_files import RunFiles
from din_model.train.state import TrainingState


class SingleProcess(Placement):
    """A single training process: the whole train split, its own checkpoints, it writes the run directory."""

    @property
    def processes(self) -> int:
        return 1

    def describe(self) -> dict:
        return {}

    def check(self, spec: FeatureSpec, params: TrainParams) -> None:
        """Every setting works for one process."""

    def restore(self, state: TrainingState, files: RunFiles) -> int:
        return state.restore_latest()

    def make_train_step(self, state: TrainingState, params: TrainParams, signature):
        return steps.make_train_step(state.model, state.optimizer, params.jit_compile, signature)

    def epoch_batches(self, spec: FeatureSpec, params: TrainParams, device: DeviceChoice, epoch: int) -> Iterator:
        return iterate_checked(epoch_dataset(spec, params, device, epoch), split_files(spec, "train"))

    def samples_in(self, labels, params: TrainParams) -> int:
        return int(labels.shape[0])

    def sum_over_processes(self, values: list) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)
