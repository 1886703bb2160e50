"""Training and evaluation of DIN on the TFRecord shards.

Owns the run directory (`params.json checkpoints/ saved_model/ tensorboard/
metrics.json curves.png`) and the loops:
- `train`: per epoch, stream the train split through a `tf.function` step (Adam,
  optional XLA), evaluate val (AUC, GAUC, logloss), write TensorBoard scalars, save a
  checkpoint (model, optimizer, epoch counter) and metrics.json. A rerun resumes
  after the last checkpointed epoch. A nan/inf loss stops with `TrainingDiverged`
  and leaves the last good checkpoint. At the end: SavedModel, curves.png.
- `evaluate`: test-split metrics of the last checkpoint, the popularity baseline
  and, for synthetic data (`raw/oracle.json`), the oracle AUC and the gap closed.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from din_common.atomic import write_json_atomic
from din_common.errors import InputError
from din_common.faults import kill_point
from din_model import metrics as metric_functions
from din_model.device import DeviceChoice, select_device
from din_model.export import export_saved_model
from din_model.model import build_model
from din_model.optimizer import FusedAdam
from din_model.params import TrainParams
from din_model.reporting import plot_curves, run_title, write_tensorboard
from din_model.reader import (batch_signature, effective_maxlen, iterate_checked, load_spec, make_dataset,
                              split_files)

ProgressCallback = Callable[[float, str], None]
EVAL_BATCH_SIZE = 8192
PROGRESS_EVERY_STEPS = 50
PARAMS_ALLOWED_TO_CHANGE_ON_RESUME = ("epochs",)
CHECKPOINT_NAME = "ckpt"


class TrainingDiverged(InputError):
    """The loss became nan or inf; the last good checkpoint is kept."""


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


# --- model state: model, optimizer, checkpoint ------------------------------------------

class TrainingState:
    """Model, optimizer and epoch counter, checkpointed together."""

    def __init__(self, params: TrainParams, spec: dict, device: DeviceChoice, checkpoint_dir: Path):
        import keras

        self.model = build_model(params, spec, device.dtype_policy, device.static_shapes)
        optimizer = FusedAdam(learning_rate=params.learning_rate)
        if device.loss_scaling:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(self.model.trainable_variables)
        self.optimizer = optimizer
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=optimizer, epoch=self.epoch)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(checkpoint_dir), max_to_keep=3,
                                                  checkpoint_name=CHECKPOINT_NAME)

    def restore_latest(self) -> int:
        """Restore the last checkpoint if any; return the number of epochs already done."""
        if self.manager.latest_checkpoint:
            self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
        return int(self.epoch.numpy())

    def checkpoint_path(self, epochs_done: int) -> str:
        """Where `save(epochs_done)` puts its checkpoint (the manager's naming)."""
        return str(self.checkpoint_dir / f"{CHECKPOINT_NAME}-{epochs_done}")

    def save(self, epochs_done: int) -> str:
        self.epoch.assign(epochs_done)
        return self.manager.save(checkpoint_number=epochs_done)


def make_train_step(model, optimizer, jit_compile: bool, signature=None):
    """The compiled train step; `signature` (`batch_signature`) makes it trace once, not again
    for the last, smaller batch of an epoch (~1.3 s of the first epoch on the default data)."""
    variables = model.trainable_variables

    @tf.function(jit_compile=jit_compile, reduce_retracing=True, input_signature=signature)
    def train_step(features, labels):
        with tf.GradientTape() as tape:
            logits = model(features, training=True)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
            loss += model.regularization_loss(features)
            scaled_loss = optimizer.scale_loss(loss)
        # Keras' Adam densifies a sparse (embedding) gradient once per use, twice a step;
        # doing it here once is ~2 % of a CPU step.
        gradients = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                     for g in tape.gradient(scaled_loss, variables)]
        optimizer.apply(gradients, variables)
        return loss

    return train_step


def make_predict_step(model, signature=None):
    features_signature = None if signature is None else [signature[0]]

    @tf.function(reduce_retracing=True, input_signature=features_signature)
    def predict_step(features):
        return tf.sigmoid(model(features, training=False))

    return predict_step


def step_signature(spec: dict, params: TrainParams, device: DeviceChoice):
    """The batches the steps get: any number of rows, or exactly batch_size (static shapes, padded eval)."""
    return batch_signature(effective_maxlen(spec, params.maxlen), params.batch_size if device.static_shapes else None)


def _pad_to(tensor: tf.Tensor, rows: int) -> tf.Tensor:
    padding = [[0, rows - int(tf.shape(tensor)[0])]] + [[0, 0]] * (len(tensor.shape) - 1)
    return tf.pad(tensor, padding)


def predict_split(predict_step, spec: dict, split: str, params: TrainParams, device: DeviceChoice) -> dict:
    """Numpy columns user_id, target_item, label, probability of a whole split (no features kept)."""
    batch_size = params.batch_size if device.static_shapes else max(params.batch_size, EVAL_BATCH_SIZE)
    dataset = make_dataset(spec, split, batch_size, shuffle=False, maxlen=params.maxlen)
    columns = {"user_id": [], "target_item": [], "label": [], "probability": []}
    for features, label in iterate_checked(dataset, split_files(spec, split)):
        rows = int(label.shape[0])
        if device.static_shapes and rows < batch_size:
            features = {name: _pad_to(value, batch_size) for name, value in features.items()}
        columns["probability"].append(predict_step(features).numpy()[:rows])
        columns["user_id"].append(features["user_id"].numpy()[:rows])
        columns["target_item"].append(features["target_item"].numpy()[:rows])
        columns["label"].append(label.numpy())
    if not columns["label"]:
        raise InputError(f"the {split} split of the TFRecords holds no samples")
    return {name: np.concatenate(parts) for name, parts in columns.items()}


def split_metrics(columns: dict) -> dict[str, float]:
    return metric_functions.all_metrics(columns["user_id"], columns["label"], columns["probability"])


# --- one epoch ------------------------------------------------------------------------

def _diverged(loss: float, epoch: int, step: int, manager, params: TrainParams) -> TrainingDiverged:
    kept = manager.latest_checkpoint or "nowhere (it diverged in the first epoch, no checkpoint yet)"
    return TrainingDiverged(
        f"training diverged: loss is {loss} at epoch {epoch} step {step}; last good checkpoint kept at {kept}; "
        f"try a lower [train] learning_rate (now {params.learning_rate})")


def run_epoch(train_step, state: TrainingState, spec, params: TrainParams, device: DeviceChoice, epoch: int,
              report: Callable[[int], None]) -> tuple[float, float]:
    """Train one epoch (1-based `epoch`); return (mean loss, samples per second)."""
    dataset = make_dataset(spec, "train", params.batch_size, shuffle=True, seed=params.seed * 1000 + epoch,
                           drop_remainder=device.static_shapes, maxlen=params.maxlen)
    loss_sum, steps, samples = 0.0, 0, 0
    started = time.perf_counter()
    for features, labels in iterate_checked(dataset, split_files(spec, "train")):
        loss = float(train_step(features, labels))
        steps += 1
        if not np.isfinite(loss):
            raise _diverged(loss, epoch, steps, state.manager, params)
        loss_sum += loss
        samples += int(labels.shape[0])
        kill_point(f"train:epoch{epoch}:step{steps}")
        if steps % PROGRESS_EVERY_STEPS == 0:
            report(samples)
    elapsed = time.perf_counter() - started
    if steps == 0:
        raise InputError("the train split of the TFRecords yields no batch "
                         f"(batch_size {params.batch_size} with drop_remainder on {device.name}?)")
    return loss_sum / steps, samples / elapsed


# --- the run ---------------------------------------------------------------------------

def _check_params_of_run(files: RunFiles, params: TrainParams) -> None:
    if not files.params.is_file():
        return
    before = json.loads(files.params.read_text()).get("params", {})
    changed = sorted(name for name, value in params.to_dict().items()
                     if name not in PARAMS_ALLOWED_TO_CHANGE_ON_RESUME and before.get(name, value) != value)
    if changed:
        raise InputError(f"{files.root} holds a run with other parameters ({', '.join(changed)} differ); "
                         "use a new run directory")


def _print_and_report(progress_callback: ProgressCallback | None, fraction: float, message: str,
                      echo: bool = True) -> None:
    if echo:
        print(message, flush=True)
    if progress_callback is not None:
        progress_callback(min(1.0, fraction), message)


def train(spec_path, run_dir, params: TrainParams, *,
          progress_callback: ProgressCallback | None = None) -> dict:
    """Train (or resume) the run in `run_dir`; return the metrics written to metrics.json.

    With a `TF_CONFIG` naming several workers, trains with MultiWorkerMirroredStrategy
    (din_model.distribute; the chief writes the run directory).
    """
    from din_model import distribute

    cluster = distribute.start_from_environment(params.device)  # first: it sets up the collective ops
    if cluster is not None:
        return distribute.train_multi_worker(cluster, spec_path, run_dir, params, progress_callback=progress_callback)
    import keras

    spec = load_spec(spec_path)
    files = RunFiles(run_dir)
    _check_params_of_run(files, params)
    device = select_device(params.device, params.precision)
    write_json_atomic(files.params, {"params": params.to_dict(), "tfrecord_fingerprint": spec.get("fingerprint")})
    keras.utils.set_random_seed(params.seed)
    maxlen = params.maxlen or int(spec["maxlen"])
    with device.scope():
        state = TrainingState(params, spec, device, files.checkpoints)
        done = state.restore_latest()
        previous = read_metrics(files.metrics).get("epochs", [])
        epochs = [record for record in previous if record["epoch"] <= done]
        if done:
            print(f"[train] resuming {files.root} after epoch {done} ({state.manager.latest_checkpoint})", flush=True)
        train_step = make_train_step(state.model, state.optimizer, params.jit_compile,
                                     step_signature(spec, params, device))
        role = EpochRole(run_epoch=lambda epoch, report: run_epoch(train_step, state, spec, params, device, epoch,
                                                                   report))
        train_epochs(state, files, spec, params, device, done, epochs, role, progress_callback)
        export_saved_model(state.model, maxlen, files.saved_model)
    return finish_run(state, files, spec, params, device, epochs)


@dataclasses.dataclass
class EpochRole:
    """What one training process does each epoch: the single process, or a worker of a cluster."""
    run_epoch: Callable[[int, Callable[[int], None]], tuple[float, float]]  # (epoch, report) -> (loss, samples/s)
    writes_run_dir: bool = True  # evaluates val and writes metrics/TensorBoard (single process, or the chief)
    metrics_fields: dict = dataclasses.field(default_factory=dict)  # extra keys for metrics.json
    progress_label: str = ""  # appended to the per-epoch progress line


def train_epochs(state: "TrainingState", files: RunFiles, spec: dict, params: TrainParams, device: DeviceChoice,
                 done: int, epochs: list[dict], role: EpochRole,
                 progress_callback: ProgressCallback | None) -> list[dict]:
    """Epochs done+1..params.epochs: train, validate, record, checkpoint; `epochs` grows in place."""
    train_samples = max(1, int(spec["splits"]["train"].get("samples", 0)))
    if role.writes_run_dir:
        predict_step = make_predict_step(state.model, step_signature(spec, params, device))
        writer = tf.summary.create_file_writer(str(files.tensorboard))
    for epoch in range(done + 1, params.epochs + 1):
        def report(samples, epoch=epoch):
            fraction = (epoch - 1 + samples / train_samples) / params.epochs
            _print_and_report(progress_callback, fraction,
                              f"epoch {epoch}/{params.epochs}: {samples:,} samples", echo=False)

        loss, rate = role.run_epoch(epoch, report)
        record = {"epoch": epoch, "train_loss": loss, "train_samples_per_s": rate}
        epochs.append(record)
        if role.writes_run_dir:
            record["val"] = split_metrics(predict_split(predict_step, spec, "val", params, device))
            write_tensorboard(writer, epoch, record)
            # metrics.json first, then the checkpoint: a kill in between leaves a record for an
            # epoch without its checkpoint, which the resume drops and retrains (never the reverse).
            write_json_atomic(files.metrics, {**_metrics_document(device, params, spec, epochs, done=False,
                                                                  checkpoint=state.checkpoint_path(epoch)),
                                              **role.metrics_fields})
        kill_point(f"train:epoch{epoch}:metrics-written")
        state.save(epoch)
        kill_point(f"train:epoch{epoch}:checkpointed")
        val = (f", val auc {record['val']['auc']:.4f} gauc {record['val']['gauc']:.4f} "
               f"logloss {record['val']['logloss']:.4f}" if "val" in record else "")
        _print_and_report(progress_callback, epoch / params.epochs,
                          f"[train] epoch {epoch}/{params.epochs}: loss {loss:.4f}, {rate:,.0f} samples/s{val} "
                          f"({device.name}, {device.precision}{role.progress_label})")
    return epochs


def finish_run(state: "TrainingState", files: RunFiles, spec: dict, params: TrainParams, device: DeviceChoice,
               epochs: list[dict], metrics_fields: dict | None = None) -> dict:
    """After the last epoch (the SavedModel already exported): curves.png and the final metrics.json."""
    plot_curves(epochs, files.curves, run_title(files.root))
    result = _metrics_document(device, params, spec, epochs, done=True,
                               checkpoint=state.manager.latest_checkpoint)
    result.update(saved_model=str(files.saved_model), curves=str(files.curves), **(metrics_fields or {}))
    write_json_atomic(files.metrics, {**read_metrics(files.metrics), **result})
    return read_metrics(files.metrics)


def _metrics_document(device: DeviceChoice, params: TrainParams, spec: dict, epochs: list[dict], *,
                      done: bool, checkpoint: str | None) -> dict:
    return {**device.describe(), "epochs": epochs, "epochs_planned": params.epochs, "training_done": done,
            "checkpoint": checkpoint, "params": params.to_dict(), "tfrecord_fingerprint": spec.get("fingerprint")}


def training_complete(metrics_path: str | Path, params: TrainParams) -> bool:
    """metrics.json says training finished with all `params.epochs` epochs."""
    document = read_metrics(metrics_path)
    return bool(document.get("training_done")) and len(document.get("epochs", [])) >= params.epochs


# --- evaluation -------------------------------------------------------------------------

def popularity_scores(spec: dict, test_items: np.ndarray) -> np.ndarray:
    """How often each test target item is a positive target in the train split (one streamed pass)."""
    counter = metric_functions.PopularityCounter(int(spec["n_items"]))
    dataset = make_dataset(spec, "train", EVAL_BATCH_SIZE, maxlen=1)
    for features, labels in iterate_checked(dataset, split_files(spec, "train")):
        counter.add(features["target_item"].numpy(), labels.numpy())
    return counter.scores(test_items)


def read_oracle_auc(path: Path) -> float | None:
    """The planted model's test AUC from raw/oracle.json (synthetic data), if present."""
    if not path.is_file():
        return None
    document = json.loads(path.read_text())
    for keys in (("oracle_test_auc",), ("test_auc",), ("test", "auc")):
        value = document
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)):
            return float(value)
    return None


def default_oracle_path(spec_path) -> Path | None:
    if isinstance(spec_path, dict):
        return None
    return Path(spec_path).resolve().parent.parent / "raw" / "oracle.json"


def evaluate(spec_path, run_dir, params: TrainParams, *, oracle_path: str | Path | None = None) -> dict:
    """Test metrics of the last checkpoint + baselines, merged into metrics.json under `test`."""
    spec = load_spec(spec_path)
    files = RunFiles(run_dir)
    device = select_device(params.device, params.precision)
    with device.scope():
        state = TrainingState(params, spec, device, files.checkpoints)
        if not state.manager.latest_checkpoint:
            raise InputError(f"{files.checkpoints}: no checkpoint to evaluate; run training first (TrainDIN)")
        state.checkpoint.restore(state.manager.latest_checkpoint).expect_partial()
        test = predict_split(make_predict_step(state.model, step_signature(spec, params, device)), spec, "test",
                             params, device)
    result = {"test": split_metrics(test),
              "popularity_test_auc": metric_functions.auc(test["label"], popularity_scores(spec, test["target_item"]))}
    oracle_path = Path(oracle_path) if oracle_path else default_oracle_path(spec_path)
    oracle_auc = read_oracle_auc(oracle_path) if oracle_path else None
    if oracle_auc is not None:
        result["oracle_test_auc"] = oracle_auc
        gap = oracle_auc - result["popularity_test_auc"]
        result["gap_closed"] = (result["test"]["auc"] - result["popularity_test_auc"]) / gap if gap else None
    write_json_atomic(files.metrics, {**read_metrics(files.metrics), **result})
    oracle_text = (f"; oracle auc {oracle_auc:.4f}, gap to the oracle closed {result['gap_closed']:.1%}"
                   if result.get("gap_closed") is not None else "")
    print(f"[evaluate] test auc {result['test']['auc']:.4f} gauc {result['test']['gauc']:.4f} "
          f"logloss {result['test']['logloss']:.4f}; popularity auc {result['popularity_test_auc']:.4f}{oracle_text}",
          flush=True)
    return read_metrics(files.metrics)

