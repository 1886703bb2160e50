"""Data-parallel training over several Ascend NPUs of one host: one process (rank) per NPU.

The Ascend adapter's way, as its TF2 training scripts do it: every process opens its own
device with `RANK_SIZE`, `RANK_ID`, `RANK_TABLE_FILE` (the HCCL rank table) and
`ASCEND_DEVICE_ID` in its environment, and the adapter's HCCL collectives
(`npu_device.distribute`) tie the processes together.

- `NpuRankPlacement` (a `Placement` of the one training loop): rank r of n reads train
  files r, r+n, ... in batches of batch_size / n (so a step is one global batch), for a
  fixed number of steps per epoch, as MultiWorkerMirroredStrategy workers do. The step
  averages the gradients over the ranks (`all_reduce(..., "mean")`) before the update;
  the model's variables are broadcast from rank 0 after building and restoring. Rank 0
  writes the run directory (checkpoints, metrics, SavedModel); the others write nothing.
- `launch_ranks`: `TrainDIN` with `[npu] devices = n` checks the rank table (din_model/device/rank_table.py:
  exactly n NPUs, else one error before any rank starts), measures the static layout's history
  capacity once and hands it to the ranks, starts the n rank processes (`python -m
  din_model.run.npu_rank ...`; rank r on the table's device_id of rank_id r, with HCCL_CONNECT_TIMEOUT
  unless set), waits for them, and stops them all when one fails.
- No rank waits in a collective while rank 0 alone works: after each epoch, and at the end, the
  others wait for rank 0's marker file in the launcher's directory (validation, checkpoint, export),
  so HCCL_EXEC_TIMEOUT only ever covers the skew of a train step (docs/ascend.md, "Timeouts").
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from din_common.atomic import write_json_atomic
from din_common.errors import InputError, RunFailed
from din_common.feature_spec import FeatureSpec
from din_model.params import TrainParams
from din_model.parallel.placement import (Placement, check_files_per_process, epoch_seed, fixed_steps,
                                          per_process_batch_size, steps_per_epoch)
from din_model.data.reader import iterate_checked, make_dataset, split_files
from din_model.train import steps
from din_model.train.run_files import RunFiles, read_metrics
from din_model.train.state import TrainingState

STRATEGY_NAME = "NPU ranks (HCCL)"
SYNC_DIR_VARIABLE = "DIN_NPU_RANKS_SYNC_DIR"  # the launcher's directory of rank 0's progress markers
SYNC_POLL_S = 0.2
# Covers a rank's start before its first collective: importing TensorFlow and the adapter, opening the NPU,
# building the model, restoring, and GE compiling the first graph with an empty operator cache, on one rank
# slower than another. CANN allows [120, 7200] s, default 120.
HCCL_CONNECT_TIMEOUT_S = 1800


class NpuRankPlacement(Placement):
    """This process as rank `rank` of `ranks` NPU processes.

    With `sync_dir` (the launcher's), the other ranks wait for rank 0's validation, checkpoint and final export
    on a marker file there, outside any collective, so no HCCL wait lasts longer than a step's skew.
    """

    def __init__(self, adapter, rank: int, ranks: int, sync_dir: Optional[str] = None):
        self.adapter, self.rank, self.ranks, self.sync_dir = adapter, rank, ranks, sync_dir

    def _rank_zero_reached(self, mark: str) -> None:
        """Rank 0 marks `mark` done; the others return once it has (the launcher stops them if rank 0 fails)."""
        marker = Path(self.sync_dir) / f"rank0-{mark}"
        if self.rank == 0:
            marker.write_text("")
            return
        while not marker.exists():
            time.sleep(SYNC_POLL_S)

    @property
    def writes_run_dir(self) -> bool:
        return self.rank == 0

    @property
    def progress_label(self) -> str:
        return f", rank {self.rank} of {self.ranks}; samples/s of all ranks"

    def describe(self) -> dict:
        return {"strategy": STRATEGY_NAME, "workers": self.ranks}

    def check(self, spec: FeatureSpec, params: TrainParams) -> None:
        check_files_per_process(spec, self.ranks, "NPU ranks")
        per_process_batch_size(params.batch_size, self.ranks, "NPU ranks")

    def restore(self, state: TrainingState, files: RunFiles) -> int:
        """Every rank restores rank 0's last checkpoint (read-only), then takes rank 0's variables."""
        done = state.restore_latest(files.checkpoints)
        self.agree_on(done, "the epochs already done in the run directory")
        self.adapter.distribute.broadcast(state.model.variables, root_rank=0)
        return done

    def make_train_step(self, state: TrainingState, params: TrainParams, signature):
        per_rank = signature if signature is None else _per_rank_signature(signature, params.batch_size // self.ranks)
        return steps.make_train_step(state.model, state.optimizer, params.jit_compile, per_rank,
                               reduce_gradients=lambda gradients: self.adapter.distribute.all_reduce(gradients, "mean"))

    def sunk_input(self, spec: FeatureSpec, params: TrainParams, device, epoch: int):
        dataset = make_dataset(spec, "train", params.batch_size // self.ranks, shuffle=True,
                               seed=epoch_seed(params, epoch), drop_remainder=True, maxlen=params.maxlen,
                               repeat=True, file_shard=(self.rank, self.ranks), history_fields=params.history_features,
                               ordered=params.deterministic)
        return dataset, steps_per_epoch(spec, params.batch_size)

    def epoch_batches(self, spec: FeatureSpec, params: TrainParams, device, epoch: int):
        dataset, steps = self.sunk_input(spec, params, device, epoch)
        return fixed_steps(iterate_checked(dataset, split_files(spec, "train")[self.rank::self.ranks]), steps)

    def samples_in(self, labels, params: TrainParams) -> int:
        return params.batch_size

    def save(self, state: TrainingState, epoch: int) -> None:
        """Rank 0 saves (after validating); the others wait for it here rather than in the next step's all-reduce."""
        if self.writes_run_dir:
            state.save(epoch)
        if self.sync_dir:
            self._rank_zero_reached(f"epoch{epoch}")

    def save_best(self, state: TrainingState, epoch: int) -> None:
        if self.writes_run_dir:
            state.save_best(epoch)

    def share_from_writer(self, values: list, moment: str) -> list[float]:
        """With the launcher's sync directory, through a file rank 0 writes there: the others wait for it
        outside any collective while rank 0 validates, as for its checkpoint."""
        if not self.sync_dir:
            return super().share_from_writer(values, moment)
        shared = Path(self.sync_dir) / f"rank0-shared-{moment}.json"
        if self.rank == 0:
            write_json_atomic(shared, {"values": [float(value) for value in values]})
        self._rank_zero_reached(f"shared-{moment}")
        return json.loads(shared.read_text())["values"]

    def barrier(self) -> None:
        if self.sync_dir:
            self._rank_zero_reached("finished")
        else:
            super().barrier()

    process_kind = "NPU ranks"

    @property
    def processes(self) -> int:
        return self.ranks

    @property
    def this_process(self) -> str:
        return f"rank {self.rank}"

    def sum_over_processes(self, values: list) -> np.ndarray:
        (summed,) = self.adapter.distribute.all_reduce([tf.constant(values, tf.float32)], "sum")
        return summed.numpy()


def _per_rank_signature(signature, rows: int):
    features, labels = signature
    with_rows = {name: tf.TensorSpec([rows] + spec.shape.as_list()[1:], spec.dtype) for name, spec in features.items()}
    return with_rows, tf.TensorSpec([rows], labels.dtype)


def placement_for(device) -> Optional[NpuRankPlacement]:
    """NPU ranks when the opened NPU belongs to a cluster of several ranks, else None."""
    handle = device.handle
    if handle is None or getattr(handle, "workers_num", 1) <= 1:
        return None
    import npu_device

    placement = NpuRankPlacement(npu_device, int(handle.worker_id), int(handle.workers_num),
                                 os.environ.get(SYNC_DIR_VARIABLE) or None)
    print(f"[train] {STRATEGY_NAME}: {placement.ranks} NPUs, this is rank {placement.rank}", flush=True)
    return placement


# --- launching the ranks ----------------------------------------------------------------

def rank_environment(rank: int, table, sync_dir: str, environ=os.environ) -> dict:
    """Rank `rank`'s variables: its NPU is the table's device_id for its rank_id. HCCL_CONNECT_TIMEOUT (unless
    the user set it) covers what a rank does before its first collective (docs/ascend.md, "Timeouts")."""
    environment = {"RANK_SIZE": str(table.ranks), "RANK_ID": str(rank),
                   "ASCEND_DEVICE_ID": str(table.device_of_rank[rank]), "RANK_TABLE_FILE": os.path.abspath(table.path),
                   SYNC_DIR_VARIABLE: sync_dir}
    if not environ.get("HCCL_CONNECT_TIMEOUT", "").strip():
        environment["HCCL_CONNECT_TIMEOUT"] = str(HCCL_CONNECT_TIMEOUT_S)
    return environment


def _capacity_for_ranks(spec_path, params: TrainParams) -> dict:
    """The static layout's history capacity, measured here once (not by every rank, on its NPU), for the ranks'
    environment; {} when the ranks' model does not use it."""
    from din_model.model.history_capacity import capacity_environment
    from din_model.model.network import resolve_history_layout

    if resolve_history_layout(params, static_shapes=True) != "static_compact":
        return {}
    spec = FeatureSpec.read(spec_path)
    return capacity_environment(spec, params.maxlen or spec.maxlen, params.batch_size)


def launch_ranks(options, spec_path, run_dir, params: TrainParams, *, poll_seconds: float = 0.5) -> dict:
    """Train on `options.devices` NPUs, one rank process each; rank 0's output is shown, the others' kept for errors.

    Returns rank 0's metrics. If a rank fails, the others are stopped and the error names
    the rank and ends with its last lines.
    """
    ranks = options.devices
    if params.device not in ("npu", "auto") or importlib.util.find_spec("npu_device") is None:
        raise InputError(f"[npu] devices = {ranks} trains on {ranks} NPUs, but "
                         + ("[train] device is " + params.device if params.device not in ("npu", "auto") else
                            "the Ascend CANN TF adapter (npu_device) is not importable (source CANN's set_env.sh)"))
    table = options.rank_table()  # a table HCCL would wait on forever is refused before any rank starts
    capacity = _capacity_for_ranks(spec_path, params)
    settings = json.dumps(dataclasses.asdict(options))
    logs = Path(tempfile.mkdtemp(prefix="din-npu-ranks-"))
    processes = []
    try:
        for rank in range(ranks):
            command = [sys.executable, "-m", "din_model.run.npu_rank", str(spec_path), str(run_dir),
                       json.dumps(params.to_dict()), settings]
            environment = {**os.environ, **capacity, **rank_environment(rank, table, str(logs))}
            output = None if rank == 0 else open(logs / f"rank{rank}.log", "w")
            processes.append((rank, subprocess.Popen(command, env=environment, stdout=output,
                                                     stderr=subprocess.STDOUT if output else None), output))
        _wait_all(processes, logs, poll_seconds)
    finally:
        for _, process, output in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            if output is not None:
                output.close()
        shutil.rmtree(logs, ignore_errors=True)  # the ranks' logs and epoch markers
    return read_metrics(RunFiles(run_dir).metrics)


def _wait_all(processes, logs: Path, poll_seconds: float) -> None:
    running = list(processes)
    while running:
        for entry in list(running):
            rank, process, _ = entry
            code = process.poll()
            if code is None:
                continue
            running.remove(entry)
            if code != 0:
                for _, other, _ in running:
                    other.terminate()
                log = logs / f"rank{rank}.log"
                tail = log.read_text().strip().splitlines()[-5:] if log.is_file() else []
                raise RunFailed(f"NPU rank {rank} of {len(processes)} failed (exit code {code}); the other ranks "
                                 "were stopped" + ("; its last lines:\n  " + "\n  ".join(tail) if tail else ""))
        time.sleep(poll_seconds)
