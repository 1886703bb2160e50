"""How one training process takes part in a run: alone, as a TF_CONFIG worker, or as one NPU rank.

The training loop (din_model/training.py) is written once, over a `Placement`. What
differs between the ways of training sits behind its methods:
- where variables are created (`scope`) and where checkpoints go (`checkpoint_dir`);
- how the state is restored and made the same on every process (`restore`);
- the train step (`make_train_step`: plain, a distribution strategy's, or with the
  gradients all-reduced over NPU ranks) and the batches of an epoch (`epoch_batches`:
  the whole split, or this process's part for a fixed number of steps), run a step or,
  for one process on a CPU or GPU, several steps per call (`epoch_steps`);
- who writes the run directory (`writes_run_dir`), agreement and barriers between processes.

`Placement` itself is the single process (CPU, one GPU, one NPU). The others:
`din_model.distribute.ClusterPlacement` (MultiWorkerMirroredStrategy from TF_CONFIG) and
`din_model.npu_ranks.NpuRankPlacement` (the Ascend adapter's HCCL collectives).
"""
from __future__ import annotations

import contextlib
import itertools
import math
from pathlib import Path
from typing import Iterator

import numpy as np

from din_common.errors import InputError
from din_model.device import DeviceChoice
from din_model.params import TrainParams
from din_model.reader import SHARD_ERRORS, damaged_shard, iterate_checked, make_dataset, split_files
from din_model import run_state
from din_model.run_state import RunFiles, TrainingState, fixed_batches


class Placement:
    """A single training process: the whole train split, its own checkpoints, it writes the run directory."""

    writes_run_dir = True
    progress_label = ""  # appended to the per-epoch progress line
    _step_loop = (None, None)  # (train step, its `make_step_loop` function), built on first use

    def describe(self) -> dict:
        """Extra metrics.json fields (strategy, number of processes)."""
        return {}

    def check(self, spec: dict, params: TrainParams) -> None:
        """Settings that cannot work with this placement: InputError before anything is built."""

    def scope(self, device: DeviceChoice):
        return device.scope()

    def checkpoint_dir(self, files: RunFiles) -> Path:
        return files.checkpoints

    def restore(self, state: TrainingState, files: RunFiles) -> int:
        """Restore the run's last checkpoint into `state`; return the epochs already done."""
        return state.restore_latest()

    def make_train_step(self, state: TrainingState, params: TrainParams, signature):
        return run_state.make_train_step(state.model, state.optimizer, params.jit_compile, signature)

    def epoch_batches(self, spec: dict, params: TrainParams, device: DeviceChoice, epoch: int) -> Iterator:
        """(features, labels) batches of one epoch (1-based `epoch`), shuffled with the epoch's seed."""
        return iterate_checked(_epoch_dataset(spec, params, device, epoch), split_files(spec, "train"))

    def sunk_input(self, spec: dict, params: TrainParams, device: DeviceChoice, epoch: int):
        """(dataset, steps): the NPU's fixed-size train batches of one epoch and how many it trains on."""
        return _epoch_dataset(spec, params, device, epoch), int(spec["splits"]["train"].get("samples", 0)) // \
            params.batch_size

    def steps_per_call(self, device: DeviceChoice) -> int:
        """Train steps one call runs: several, with no Python between them, for one process on a CPU or
        GPU; `[npu] iterations_per_loop` on the NPU (one graph-engine loop); one where processes meet
        in collectives of a TF_CONFIG cluster."""
        return device.iterations_per_loop if device.name == "npu" else run_state.STEPS_PER_CALL

    def epoch_steps(self, train_step, spec: dict, params: TrainParams, device: DeviceChoice,
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
        iterator = iter(_epoch_dataset(spec, params, device, epoch))
        while True:
            with _naming_damaged_shard(spec):
                losses, samples = run(iterator)
            if not len(losses):
                return
            yield losses.numpy(), int(samples)

    def _step_loop_of(self, train_step, device: DeviceChoice):
        """One loop function per train step, traced once."""
        if self._step_loop[0] is not train_step:
            self._step_loop = (train_step, run_state.make_step_loop(train_step, self.steps_per_call(device),
                                                                    sunk=device.name == "npu"))
        return self._step_loop[1]

    def _sunk_epoch_steps(self, train_step, spec: dict, params: TrainParams, device: DeviceChoice, epoch: int):
        """The NPU: calls of `iterations_per_loop` steps (fewer for the epoch's last), each its loop size."""
        run = self._step_loop_of(train_step, device)
        dataset, steps = self.sunk_input(spec, params, device, epoch)
        iterator, done = iter(dataset), 0
        while done < steps:
            count = min(self.steps_per_call(device), steps - done)
            if device.set_loop_size is not None:  # a DeviceChoice made by hand (tests) may have none
                device.set_loop_size(count)
            with _naming_damaged_shard(spec):
                losses = run(iterator, count)
            done += count
            yield losses, count * params.batch_size

    def samples_in(self, labels, params: TrainParams) -> int:
        """Samples one step trained on (over every process)."""
        return int(labels.shape[0])

    def save(self, state: TrainingState, epoch: int) -> None:
        state.save(epoch)

    processes = "processes"  # what the processes of a cluster are called in messages
    this_process = "this process"

    def sum_over_processes(self, values: list) -> np.ndarray:
        """Element-wise sum of `values` over every process (a collective, hence also a barrier)."""
        return np.asarray(values, dtype=np.float64)

    def agree_on(self, value: int, what: str) -> None:
        """InputError unless every process holds the same value."""
        total, squares, count = self.sum_over_processes([float(value), float(value) ** 2, 1.0])
        if squares * count != total * total:  # equal only when every value is the same
            raise InputError(f"the {self.processes} disagree on {what} ({self.this_process} has {value}, mean over "
                             f"the {self.processes} {total / count:g}); every one must see the same run directory "
                             "(put [paths] data_dir on storage shared by all machines)")

    def barrier(self) -> None:
        """Returns once every process has reached it."""
        self.sum_over_processes([1.0])

    def close(self) -> None:
        """Release what the placement holds (temporary directories)."""


@contextlib.contextmanager
def _naming_damaged_shard(spec: dict):
    """A damaged train shard is named; any other failure is raised as it is."""
    try:
        yield
    except SHARD_ERRORS:
        damaged = damaged_shard(split_files(spec, "train"))
        if damaged is None:
            raise
        raise damaged from None


def _epoch_dataset(spec: dict, params: TrainParams, device: DeviceChoice, epoch: int):
    return make_dataset(spec, "train", params.batch_size, shuffle=True, seed=epoch_seed(params, epoch),
                        drop_remainder=fixed_batches(params, device), maxlen=params.maxlen,
                        history_fields=params.history_features)


def epoch_seed(params: TrainParams, epoch: int) -> int:
    return params.seed * 1000 + epoch


def steps_per_epoch(spec: dict, batch_size: int) -> int:
    """Global steps of one epoch when processes share the split: every one runs this many,
    so none waits at a collective for a batch another one does not have."""
    return max(1, math.ceil(int(spec["splits"]["train"].get("samples", 0)) / batch_size))


def check_files_per_process(spec: dict, processes: int, what: str) -> None:
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
