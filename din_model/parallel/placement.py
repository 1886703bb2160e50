"""How one training process takes part in a run: the `Placement` interface and the helpers its implementations share.

The training loop (din_model/run/loop.py) is written once, over a `Placement`. What
differs between the ways of training sits behind its methods:
- where variables are created (`scope`) and where checkpoints go (`checkpoint_dir`);
- how the state is restored and made the same on every process (`restore`);
- the train step (`make_train_step`: plain, a distribution strategy's, or with the
  gradients all-reduced over NPU ranks) and the batches of an epoch (`epoch_batches`:
  the whole split, or this process's part for a fixed number of steps), run a step or,
  for one process on a CPU or GPU, several steps per call (`epoch_steps`);
- who writes the run directory (`writes_run_dir`), agreement and barriers between processes, and
  how the writer's decisions (a new best epoch, stop early) reach the others (`share_from_writer`).

Each implementation answers the abstract methods; the others have defaults that hold for a
process training on its own data with its own checkpoints. The implementations:
`din_model.parallel.single.SingleProcess` (CPU, one GPU, one NPU),
`din_model.parallel.cluster.Cluster` (MultiWorkerMirroredStrategy from TF_CONFIG) and
`din_model.parallel.npu_ranks.NpuRankPlacement` (the Ascend adapter's HCCL collectives).
"""
from __future__ import annotations

import abc
import contextlib
import itertools
import math
from pathlib import Path
from typing import Iterator

import numpy as np

from din_common.errors import InputError
from din_common.feature_spec import FeatureSpec
from din_model.device.selection import DeviceChoice
from din_model.params import TrainParams
from din_model.data.reader import SHARD_ERRORS, damaged_shard, make_dataset, split_files
from din_model.train import steps
from din_model.train.policies import fixed_batches
from din_model.train.run_files import RunFiles
from din_model.train.state import TrainingState


class Placement(abc.ABC):
    """How this process takes part in a run. Defaults: it writes the run directory, keeps its own checkpoints,
    and runs several steps per call."""

    writes_run_dir = True
    progress_label = ""  # appended to the per-epoch progress line
    process_kind = "processes"  # what the processes of a run are called in messages
    this_process = "this process"
    _step_loop = (None, None)  # (train step, its `make_step_loop` function), built on first use

    @property
    @abc.abstractmethod
    def processes(self) -> int:
        """How many processes train the run together (1: this one alone)."""

    @abc.abstractmethod
    def describe(self) -> dict:
        """Extra metrics.json fields (strategy, number of processes)."""

    @abc.abstractmethod
    def check(self, spec: FeatureSpec, params: TrainParams) -> None:
        """Settings that cannot work with this placement: InputError before anything is built."""

    @abc.abstractmethod
    def restore(self, state: TrainingState, files: RunFiles) -> int:
        """Restore the run's last checkpoint into `state`; return the epochs already done."""

    @abc.abstractmethod
    def make_train_step(self, state: TrainingState, params: TrainParams, signature):
        """The compiled train step: (features, labels) -> the loss of the (global) batch."""

    @abc.abstractmethod
    def epoch_batches(self, spec: FeatureSpec, params: TrainParams, device: DeviceChoice, epoch: int) -> Iterator:
        """(features, labels) batches of one epoch (1-based `epoch`), shuffled with the epoch's seed."""

    @abc.abstractmethod
    def samples_in(self, labels, params: TrainParams) -> int:
        """Samples one step trained on (over every process)."""

    @abc.abstractmethod
    def sum_over_processes(self, values: list) -> np.ndarray:
        """Element-wise sum of `values` over every process (a collective, hence also a barrier)."""

    def scope(self, device: DeviceChoice):
        """Where the model and optimizer variables are created."""
        return device.scope()

    def checkpoint_dir(self, files: RunFiles) -> Path:
        """Where this process's checkpoint manager saves."""
        return files.checkpoints

    def sunk_input(self, spec: FeatureSpec, params: TrainParams, device: DeviceChoice, epoch: int):
        """(dataset, steps): the NPU's fixed-size train batches of one epoch and how many it trains on."""
        return epoch_dataset(spec, params, device, epoch), spec.samples("train") // params.batch_size

    def steps_per_call(self, device: DeviceChoice) -> int:
        """Train steps one call runs: several, with no Python between them, for one process on a CPU or
        GPU; `[npu] iterations_per_loop` on the NPU (one graph-engine loop); one where processes meet
        in collectives of a TF_CONFIG cluster."""
        return device.iterations_per_loop if device.name == "npu" else steps.STEPS_PER_CALL

    def epoch_steps(self, train_step, spec: FeatureSpec, params: TrainParams, device: DeviceChoice,
                    epoch: int) -> Iterator[tuple[np.ndarray, int]]:
        """(losses, samples) of one epoch's train steps, `steps_per_call` steps at a time."""
        if device.name == "npu":
            yield from self._sunk_epoch_steps(train_step, spec, params, device, epoch)
            return
        if self.steps_per_call(device) == 1:
            for features, labels in self.epoch_batches(spec, params, device, epoch):
                # on several processes: the same reduced value on each
                yield np.array([float(train_step(features, labels))]), self.samples_in(labels, params)
            return
        run = self._step_loop_of(train_step, device)
        iterator = iter(epoch_dataset(spec, params, device, epoch))
        while True:
            with _naming_damaged_shard(spec):
                losses, samples = run(iterator)
            if not len(losses):
                return
            yield losses.numpy(), int(samples)

    def _step_loop_of(self, train_step, device: DeviceChoice):
        """One loop function per train step, traced once."""
        if self._step_loop[0] is not train_step:
            self._step_loop = (train_step, steps.make_step_loop(train_step, self.steps_per_call(device),
                                                                    sunk=device.name == "npu"))
        return self._step_loop[1]

    def _sunk_epoch_steps(self, train_step, spec: FeatureSpec, params: TrainParams, device: DeviceChoice, epoch: int):
        """The NPU: calls of `iterations_per_loop` steps (fewer for the epoch's last), each its loop size."""
        run = self._step_loop_of(train_step, device)
        dataset, total = self.sunk_input(spec, params, device, epoch)
        iterator, done = iter(dataset), 0
        while done < total:
            count = min(self.steps_per_call(device), total - done)
            if device.set_loop_size is not None:  # a DeviceChoice made by hand (tests) may have none
                device.set_loop_size(count)
            with _naming_damaged_shard(spec):
                losses = run(iterator, count)
            done += count
            yield losses, count * params.batch_size

    def save(self, state: TrainingState, epoch: int) -> None:
        """Checkpoint after `epoch` (after its metrics are written)."""
        state.save(epoch)

    def save_best(self, state: TrainingState, epoch: int) -> None:
        """Keep the checkpoint of `epoch` (already saved as the latest) as the best epoch's."""
        state.save_best(epoch)

    def share_from_writer(self, values: list, moment: str) -> list[float]:
        """The writer's `values` on every process (each calls this at the same `moment`, e.g. "epoch3"): what
        only the writer knows, such as the decisions it takes from validation."""
        return [float(value) for value in
                self.sum_over_processes([float(value) if self.writes_run_dir else 0.0 for value in values])]

    def agree_on(self, value: int, what: str) -> None:
        """InputError unless every process holds the same value."""
        total, squares, count = self.sum_over_processes([float(value), float(value) ** 2, 1.0])
        if squares * count != total * total:  # equal only when every value is the same
            raise InputError(f"the {self.process_kind} disagree on {what} ({self.this_process} has {value}, mean over "
                             f"the {self.process_kind} {total / count:g}); every one must see the same run directory "
                             "(put [paths] data_dir on storage shared by all machines)")

    def barrier(self) -> None:
        """Returns once every process has reached it."""
        self.sum_over_processes([1.0])

    def close(self) -> None:
        """Release what the placement holds (temporary directories)."""


@contextlib.contextmanager
def _naming_damaged_shard(spec: FeatureSpec):
    """A damaged train shard is named; any other failure is raised as it is."""
    try:
        yield
    except SHARD_ERRORS:
        damaged = damaged_shard(split_files(spec, "train"))
        if damaged is None:
            raise
        raise damaged from None


def epoch_dataset(spec: FeatureSpec, params: TrainParams, device: DeviceChoice, epoch: int):
    """The whole train split in batches of batch_size, shuffled with the epoch's seed."""
    return make_dataset(spec, "train", params.batch_size, shuffle=True, seed=epoch_seed(params, epoch),
                        drop_remainder=fixed_batches(params, device), maxlen=params.maxlen,
                        history_fields=params.history_features, ordered=params.deterministic)


def epoch_seed(params: TrainParams, epoch: int) -> int:
    return params.seed * 1000 + epoch


def steps_per_epoch(spec: FeatureSpec, batch_size: int) -> int:
    """Global steps of one epoch when processes share the split: every one runs this many,
    so none waits at a collective for a batch another one does not have."""
    return max(1, math.ceil(spec.samples("train") / batch_size))


def check_files_per_process(spec: FeatureSpec, processes: int, what: str) -> None:
    files = split_files(spec, "train")
    if len(files) < processes:
        raise InputError(f"the train split has {len(files)} TFRecord file(s) for {processes} {what}; each one reads "
                         "its own files, so set [preprocess] num_shards to at least that number (or run fewer)")


def per_process_batch_size(batch_size: int, processes: int, what: str) -> int:
    if batch_size % processes:
        raise InputError(f"[train] batch_size {batch_size} is the global batch and must be divisible by the "
                         f"{processes} {what}; e.g. {max(processes, batch_size // processes * processes)}")
    return batch_size // processes


def fixed_steps(batches: Iterator, steps: int) -> Iterator:
    """The first `steps` batches of an endless iterator."""
    return itertools.islice(batches, steps)
