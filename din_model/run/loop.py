"""The training loop of DIN on the TFRecord shards, one loop for every way of training.

Owns the loop over epochs and its run directory contract:
- `train`: per epoch, stream the train split through the compiled step, evaluate val
  (AUC, GAUC, logloss), write TensorBoard scalars, metrics.json and a checkpoint (model,
  optimizer, epoch counter), and keep the best epoch's checkpoint beside it; stop after
  `[train] patience` epochs without a gain, and decay the learning rate after `lr_decay_patience`
  epochs without one (din_model/train/best_epoch.py). A rerun resumes
  after the last checkpointed epoch. A nan/inf loss stops with `TrainingDiverged` and leaves
  the last good checkpoint. At the end: SavedModel (of the best epoch with `restore_best`), curves.png.
- How this process takes part (alone, a TF_CONFIG worker, an NPU rank) is a `Placement`
  (din_model/parallel/), chosen by `choose_placement`; only the process that writes
  the run directory validates and writes.
The state, steps and evaluation are in din_model/train/.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from din_common.atomic import write_json_atomic
from din_common.errors import InputError, Interrupted, RunFailed
from din_common.faults import kill_point
from din_common.feature_spec import FeatureSpec
from din_model import compat
from din_model.data.reader import feature_spec_at
from din_model.model.footprint import check_fits_in_memory
from din_model.device import cpu_kernels
from din_model.device.selection import DeviceChoice, select_device
from din_model.parallel.choose import choose_placement, placement_on
from din_model.parallel.placement import Placement
from din_model.params import TrainParams
from din_model.train import steps
from din_model.train.best_epoch import BestEpoch, early_stopping_fields, float32_digits, plateau_learning_rate
from din_model.train.evaluation import evaluate, predict_split, split_metrics  # noqa: F401  (evaluate: public API)
from din_model.train.portable_weights import assign_weights
from din_model.train.export import export_saved_model
from din_model.train.policies import resolve_xla
from din_model.train.reporting import TensorBoardLog, plot_curves, run_title
from din_model.train.run_files import RunFiles, read_metrics, training_complete  # noqa: F401  (public API)
from din_model.train.state import TrainingState
from din_model.train.steps import step_signature

ProgressCallback = Callable[[float, str], None]
PROGRESS_EVERY_STEPS = 50
PARAMS_ALLOWED_TO_CHANGE_ON_RESUME = ("epochs",)
# Worked out from the settings and the machine (params.json records them); they may differ on resume.
DERIVED_PARAMS = ("jit_compile",)


class TrainingDiverged(RunFailed):
    """The loss became nan or inf; the last good checkpoint is kept."""


def _diverged(loss: float, epoch: int, step: int, manager, params: TrainParams) -> TrainingDiverged:
    kept = manager.latest_checkpoint or "nowhere (it diverged in the first epoch, no checkpoint yet)"
    return TrainingDiverged(
        f"training diverged: loss is {loss} at epoch {epoch} step {step}; last good checkpoint kept at {kept}; "
        f"try a lower [train] learning_rate (now {params.learning_rate})")


def run_epoch(train_step, state: TrainingState, spec: FeatureSpec, params: TrainParams, device: DeviceChoice, epoch: int,
              report: Callable[[int], None], placement: Placement) -> tuple[float, float]:
    """Train one epoch (1-based `epoch`) on the placement's batches; return (mean loss, samples per second)."""
    loss_sum, steps_done, samples = 0.0, 0, 0
    started = time.perf_counter()
    for losses, samples_of_call in placement.epoch_steps(train_step, spec, params, device, epoch):
        reported = steps_done // PROGRESS_EVERY_STEPS
        for loss in map(float, losses):
            steps_done += 1
            if not np.isfinite(loss):
                raise _diverged(loss, epoch, steps_done, state.manager, params)
            loss_sum += loss
            kill_point(f"train:epoch{epoch}:step{steps_done}")
        samples += samples_of_call
        if steps_done // PROGRESS_EVERY_STEPS > reported:
            report(samples)
    elapsed = time.perf_counter() - started
    if steps_done == 0:
        raise InputError("the train split of the TFRecords yields no batch "
                         f"(batch_size {params.batch_size} with drop_remainder on {device.name}?"
                         f"{placement.progress_label})")
    return loss_sum / steps_done, samples / elapsed


def _check_params_of_run(files: RunFiles, params: TrainParams) -> None:
    if not files.params.is_file():
        return
    before = json.loads(files.params.read_text()).get("params", {})
    changed = sorted(name for name, value in params.to_dict().items()
                     if name not in PARAMS_ALLOWED_TO_CHANGE_ON_RESUME + DERIVED_PARAMS
                     and before.get(name, value) != value)
    if changed:
        raise InputError(f"{files.root} holds a run with other parameters ({', '.join(changed)} differ); "
                         "use a new run directory")


def _print_and_report(progress_callback: ProgressCallback | None, fraction: float, message: str,
                      echo: bool = True) -> None:
    if echo:
        print(message, flush=True)
    if progress_callback is not None:
        progress_callback(min(1.0, fraction), message)


def train(spec_path: str | Path | FeatureSpec, run_dir, params: TrainParams, *, progress_callback: Optional[ProgressCallback] = None,
          worker_timeout: float = 300.0) -> dict:
    """Train (or resume) the run in `run_dir`; return the metrics written to metrics.json.

    With a `TF_CONFIG` naming several workers, this process is one worker of a
    MultiWorkerMirroredStrategy (din_model/parallel/cluster.py); with the Ascend adapter opened in
    a rank of several (`RANK_SIZE` > 1), one NPU rank (din_model/parallel/npu_ranks.py). Then only
    the chief / rank 0 writes the run directory. `worker_timeout`: how long a cluster
    worker waits for the others to start.
    """
    placement = choose_placement(params, run_dir, worker_timeout)
    state = None
    try:
        spec = feature_spec_at(spec_path)
        check_fits_in_memory(params, spec.n_items, spec.n_cats, params.maxlen or spec.maxlen)
        files = RunFiles(run_dir)
        _check_params_of_run(files, params)
        device = select_device(params.device, params.precision, deterministic=params.deterministic)
        placement = placement_on(device, placement)
        params = resolve_xla(params, device, spec, one_process=placement.processes == 1)
        placement.check(spec, params)
        if placement.writes_run_dir:
            write_json_atomic(files.params, {"params": params.to_dict(),
                                             "tfrecord_fingerprint": spec.fingerprint})
        compat.set_random_seed(params.seed)
        maxlen = params.maxlen or spec.maxlen
        with placement.scope(device):
            state = TrainingState(params, spec, device, placement.checkpoint_dir(files))
            done = placement.restore(state, files)
            epochs = ([record for record in read_metrics(files.metrics).get("epochs", []) if record["epoch"] <= done]
                      if placement.writes_run_dir else [])
            if done:
                print(f"[train] resuming {files.root} after epoch {done}", flush=True)
            train_step = placement.make_train_step(state, params, step_signature(spec, params, device))
            train_epochs(train_step, state, files, spec, params, device, done, epochs, placement, progress_callback)
            if placement.writes_run_dir:
                if params.restore_best:
                    assign_weights(state.model, state.checkpoint_to_export(params.restore_best))
                export_saved_model(state.model, maxlen, files.saved_model)
        if placement.writes_run_dir:
            finish_run(state, files, spec, params, device, epochs, placement.describe())
        placement.barrier()  # the others leave once the writer's outputs are complete
        if placement.writes_run_dir:
            return read_metrics(files.metrics)
        return _metrics_document(device, params, spec, epochs, done=True, checkpoint=None)
    except KeyboardInterrupt:
        raise _interrupted(state) from None
    finally:
        placement.close()


def _interrupted(state: Optional[TrainingState]) -> Interrupted:
    """Ctrl-C: the one line naming the last epoch whose checkpoint the rerun resumes from."""
    if state is None or not state.checkpointed:
        return Interrupted("interrupted before the first epoch was checkpointed; rerun the same command to start "
                           "the run again")
    return Interrupted(f"interrupted after epoch {state.checkpointed}; rerun the same command to resume")


def train_epochs(train_step, state: TrainingState, files: RunFiles, spec: FeatureSpec, params: TrainParams,
                 device: DeviceChoice, done: int, epochs: list, placement: Placement,
                 progress_callback: Optional[ProgressCallback]) -> list:
    """Epochs done+1..params.epochs: train, validate, record, checkpoint (and keep the best), until the patience
    is spent; `epochs` grows in place. The writer decides from its validation, the others follow it."""
    train_samples = max(1, spec.samples("train"))
    if placement.writes_run_dir:
        predict_step = steps.make_predict_step(state.model, step_signature(spec, params, device))
        tensorboard = TensorBoardLog(files.tensorboard, epochs)
    best = BestEpoch.from_records(epochs)
    learning_rate_variable = compat.learning_rate_variable(state.optimizer)
    if done and _resumed_run_stops(state, params, done, best, placement):
        return epochs
    for epoch in range(done + 1, params.epochs + 1):
        def report(samples, epoch=epoch):
            fraction = (epoch - 1 + samples / train_samples) / params.epochs
            _print_and_report(progress_callback, fraction,
                              f"epoch {epoch}/{params.epochs}: {samples:,} samples", echo=False)

        learning_rate = float32_digits(float(learning_rate_variable.numpy()))
        loss, rate = run_epoch(train_step, state, spec, params, device, epoch, report, placement)
        record = {"epoch": epoch, "train_loss": loss, "train_samples_per_s": rate, "learning_rate": learning_rate}
        epochs.append(record)
        improved = stop = False
        next_learning_rate = learning_rate
        if placement.writes_run_dir:
            record["val"] = split_metrics(predict_split(predict_step, spec, "val", params, device))
            improved = best.update(record)
            stop = best.patience_spent(epoch, params.patience)
            next_learning_rate = plateau_learning_rate(epochs, params)
            tensorboard.write(epoch, record)
            # metrics.json first, then the checkpoint: a kill in between leaves a record for an
            # epoch without its checkpoint, which the resume drops and retrains (never the reverse).
            write_json_atomic(files.metrics, {**_metrics_document(device, params, spec, epochs, done=False,
                                                                  checkpoint=state.checkpoint_path(epoch)),
                                              **placement.describe()})
        improved, stop, next_learning_rate = placement.share_from_writer([improved, stop, next_learning_rate],
                                                                         f"epoch{epoch}")
        improved, stop = bool(improved), bool(stop)
        kill_point(f"train:epoch{epoch}:metrics-written")
        # before the checkpoint, which saves it: a resumed run trains its next epoch at this rate
        learning_rate_variable.assign(next_learning_rate)
        placement.save(state, epoch)
        kill_point(f"train:epoch{epoch}:checkpointed")
        # The best checkpoint after the latest one: a kill in between is mended on resume (_resumed_run_stops).
        if improved and params.restore_best:
            placement.save_best(state, epoch)
            kill_point(f"train:epoch{epoch}:best-kept")
        val = (f", val auc {record['val']['auc']:.4f} gauc {record['val']['gauc']:.4f} "
               f"logloss {record['val']['logloss']:.4f}" if "val" in record else "")
        _print_and_report(progress_callback, epoch / params.epochs,
                          f"[train] epoch {epoch}/{params.epochs}: loss {loss:.4f}, {rate:,.0f} samples/s{val} "
                          f"({device.name}, {device.precision}{', xla' if params.jit_compile else ''}"
                          f"{placement.progress_label})")
        # Compared at the variable's precision: a setting such as 0.0012345678 is not a decay from its float32 value.
        if float32_digits(next_learning_rate) < learning_rate and not stop and epoch < params.epochs:
            _print_and_report(progress_callback, epoch / params.epochs,
                              f"[train] learning rate {next_learning_rate:g} from epoch {epoch + 1}: [train] "
                              f"lr_decay_patience = {params.lr_decay_patience} epoch(s) without a validation AUC gain")
        if stop:
            _print_and_report(progress_callback, 1.0, f"[train] stopping early after epoch {epoch}: "
                              f"[train] patience = {params.patience} epoch(s) without a validation AUC gain")
            break
    return epochs


def _resumed_run_stops(state: TrainingState, params: TrainParams, done: int, best: BestEpoch,
                       placement: Placement) -> bool:
    """On resume after `done` epochs: keep the restored state as the best checkpoint if the run was killed after
    checkpointing a new best epoch but before keeping it; True if the run had already stopped early."""
    keep = placement.writes_run_dir and params.restore_best and best.epoch == done and not state.holds_best(done)
    keep, stop = map(bool, placement.share_from_writer([keep, best.patience_spent(done, params.patience)],
                                                       f"resumed{done}"))
    if keep:
        placement.save_best(state, done)
    return stop


def finish_run(state: TrainingState, files: RunFiles, spec: FeatureSpec, params: TrainParams, device: DeviceChoice,
               epochs: list[dict], metrics_fields: dict | None = None) -> dict:
    """After the last epoch (the SavedModel already exported): curves.png and the final metrics.json."""
    plot_curves(epochs, files.curves, run_title(files.root))
    result = _metrics_document(device, params, spec, epochs, done=True,
                               checkpoint=state.checkpoint_to_export(params.restore_best))
    result.update(saved_model=str(files.saved_model), curves=str(files.curves), **(metrics_fields or {}))
    write_json_atomic(files.metrics, {**read_metrics(files.metrics), **result})
    return read_metrics(files.metrics)


def _metrics_document(device: DeviceChoice, params: TrainParams, spec: FeatureSpec, epochs: list[dict], *,
                      done: bool, checkpoint: str | None) -> dict:
    return {**device.describe(), "cpu_kernels": cpu_kernels.CHOICE,
            "cpu_choices": cpu_kernels.CHOICES, "epochs": epochs, "epochs_planned": params.epochs,
            "training_done": done, **early_stopping_fields(epochs, params),
            "checkpoint": checkpoint, "params": params.to_dict(), "tfrecord_fingerprint": spec.fingerprint}


