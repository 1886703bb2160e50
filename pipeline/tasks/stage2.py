"""Stage-2 Luigi tasks: TrainDIN and EvaluateDIN, thin shells over `din_model.run.loop`.

The only pipeline module that imports din_model, and only inside functions: TensorFlow starts
when a stage-2 task runs (`training_module`), never when stage 1 is scheduled, nor to check that a
stage-2 task is complete: the completeness checks and the summary's run folder use TensorFlow-free
din_model modules only (params, device.npu_options, model.footprint, train.run_files), so a command
with nothing to do never loads TensorFlow.

Both read the `[train]` section (pipeline.config.train) into `din_model.params.TrainParams`
and the `[npu]` section into `din_model.device.npu_options.NpuOptions`: checked when the task is
scheduled (a bad value stops the run before stage 1) and handed to `din_model.device.configure_npu`
before training or evaluating, so one process opens the NPU once with those options.
The run directory is `<data_dir>/runs/<run_id>/`, `run_id` hashing every training
parameter, the fingerprint that stage 1 writes into feature_spec.json, the spec's content
(maxlen, sizes, files, sample counts; the spec is checked against the shard manifests first) and, when training
runs on the NPU, the `[npu]` settings that change the numbers (`npu_numerics`); so a changed
training parameter or precision mode starts a new run and leaves stage 1 untouched, and new
shards start a new run too.
- TrainDIN: complete when the run's metrics.json says training is done with all epochs.
  A killed TrainDIN resumes from its last checkpoint when rerun.
- EvaluateDIN: adds test metrics and baselines to metrics.json and writes
  evaluation.json (its completion marker).
The work of both is plain functions of one parameter set (`train_run`, `evaluate_run`, and
`train_and_evaluate`, both in a row, skipping what the run already has), which TuneDIN's trials
(pipeline/tasks/tuning.py) call too.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import luigi

from din_common import tf_config
from din_common.atomic import write_json_atomic
from pipeline import config
from pipeline.console import progress_line
from pipeline.fingerprint import read_manifest_fingerprint
from pipeline.tasks.base import LockedTask
from pipeline.tasks.stage1 import Preprocess

METRICS_FILE = "metrics.json"
EVALUATION_FILE = "evaluation.json"


def current_train_params():
    """`[train]` as TrainParams, checked (with worker_timeout, which is not a model setting) before anything runs."""
    from din_model.params import TrainParams

    config.refuse_empty_flags()
    section = config.train()
    config.require_seconds("train", "worker_timeout", section.worker_timeout)
    names = ("batch_size", "epochs", "learning_rate", "embed_dim", "attention_hidden", "mlp_hidden", "activation",
             "attention_softmax", "dropout", "l2", "mini_batch_aware_l2", "use_category", "device", "precision",
             "seed", "history_layout", "xla", "model", "sequence_features", "patience", "restore_best",
             "lr_decay_factor", "lr_decay_patience", "deterministic")
    return TrainParams(**{name: getattr(section, name) for name in names})


def training_module():
    """din_model.run.loop, with TensorFlow started without its start-up noise (din_model.device.quiet_start)."""
    from din_model.device.quiet_start import import_tensorflow

    import_tensorflow()
    from din_model.run import loop as training

    return training


def current_npu_options():
    """`[npu]` as NpuOptions; the compiled-operator cache goes into the data dir unless a directory is named."""
    from din_model.device.npu_options import NpuOptions

    values = dict(config.section_values(config.npu()))
    if values.get("op_compiler_cache_mode", "enable").strip() != "disable" and \
            not values.get("op_compiler_cache_dir", "").strip():
        values["op_compiler_cache_dir"] = os.path.join(config.paths().data_dir, "npu_op_cache")
    return NpuOptions.from_strings(values)


def npu_numerics(params):
    """The `[npu]` settings that change the numbers, when training will run on the NPU (else None): part of
    the run id, so a changed precision mode or mixlist starts a new run."""
    from din_model.device.npu_options import npu_adapter_present

    if params.device == "npu" or (params.device == "auto" and npu_adapter_present()):
        return current_npu_options().numerics(params.precision)
    return None


def _use_npu_options() -> None:
    from din_model.device.selection import configure_npu

    configure_npu(current_npu_options())


def _tfrecords_fingerprint(preprocess_task) -> str:
    """The fingerprint the current feature_spec.json has (or will have once Preprocess ran)."""
    return preprocess_task.expected_fingerprint() or "inputs-missing"


def _current_spec(preprocess_task, fingerprint: str):
    """feature_spec.json once Preprocess wrote it for `fingerprint` (else None), checked against the shard
    manifests (FeatureSpec.read): an edited spec stops here with one line, before TensorFlow starts."""
    from din_common.feature_spec import FeatureSpec

    path = Path(preprocess_task.output().path)
    if read_manifest_fingerprint(path) != fingerprint:
        return None
    return FeatureSpec.read(path)


def run_dir_of(params, preprocess_task) -> Path:
    """`<data_dir>/runs/<run_id>/` of one parameter set on the shards `preprocess_task` writes."""
    from din_model.params import run_id

    fingerprint = _tfrecords_fingerprint(preprocess_task)
    spec = _current_spec(preprocess_task, fingerprint)
    identifier = run_id(params, fingerprint, npu_numerics(params), spec and spec.content_fingerprint())
    return Path(config.paths().data_dir) / "runs" / identifier


def check_memory(params, preprocess_task) -> None:
    """Settings whose weights cannot fit are refused before TensorFlow starts (once the spec is written;
    before that, the training run checks it before building the model)."""
    from din_model.model.footprint import check_fits_in_memory

    spec = _current_spec(preprocess_task, _tfrecords_fingerprint(preprocess_task))
    if spec is not None:
        check_fits_in_memory(params, spec.n_items, spec.n_cats, params.maxlen or spec.maxlen)


def train_run(params, preprocess_task, report=None) -> Path:
    """Train (or resume) the run of `params` and return its directory: what TrainDIN runs. `report(message,
    percent)` hears the progress (a task's Luigi status)."""
    run_dir = run_dir_of(params, preprocess_task)
    spec_path = Path(preprocess_task.output().path)
    training = training_module()
    options = current_npu_options()
    print(f"[TrainDIN] run {run_dir.name}: {params.epochs} epochs into {run_dir}", flush=True)
    if options.devices > 1:  # one rank process per NPU; this process opens none
        from din_model.parallel.npu_ranks import launch_ranks

        launch_ranks(options, spec_path, run_dir, params)
        return run_dir
    _use_npu_options()
    progress = None if report is None else (lambda fraction, message: report(message, round(100 * fraction)))
    training.train(spec_path, run_dir, params, progress_callback=progress, worker_timeout=config.train().worker_timeout)
    return run_dir


def evaluate_run(params, preprocess_task) -> dict:
    """Score the trained run of `params` on the test split, write its evaluation.json and return that summary:
    what EvaluateDIN runs."""
    run_dir = run_dir_of(params, preprocess_task)
    training = training_module()
    _use_npu_options()
    progress_line("EvaluateDIN", "scoring the test split, then the popularity baseline")
    result = training.evaluate(Path(preprocess_task.output().path), run_dir, params,
                               npu_numerics=npu_numerics(params))
    summary = {name: result[name] for name in ("test", "popularity_test_auc", "oracle_test_auc", "gap_closed",
                                                  "rela_impr")
               if name in result}
    write_json_atomic(str(run_dir / EVALUATION_FILE), summary)
    return summary


def train_and_evaluate(params, preprocess_task, report=None) -> dict:
    """One parameter set from training to test metrics, as TrainDIN then EvaluateDIN would run it (each step
    skipped when its run already has it): {run_id, run_dir, val_auc (the exported epoch's), test_auc}.
    TuneDIN's trials are these."""
    from din_model.train.run_files import read_metrics, training_complete

    run_dir = run_dir_of(params, preprocess_task)
    check_memory(params, preprocess_task)
    if not training_complete(run_dir / METRICS_FILE, params):
        train_run(params, preprocess_task, report)
    evaluation = run_dir / EVALUATION_FILE
    summary = json.loads(evaluation.read_text()) if evaluation.exists() else evaluate_run(params, preprocess_task)
    metrics = read_metrics(run_dir / METRICS_FILE)
    return {"run_id": run_dir.name, "run_dir": str(run_dir), "val_auc": exported_val_auc(metrics),
            "test_auc": summary["test"]["auc"]}


def exported_val_auc(metrics: dict) -> float:
    """The validation AUC of the epoch a run exported (metrics.json `exported_epoch`)."""
    exported = metrics["exported_epoch"]
    return next(record["val"]["auc"] for record in metrics["epochs"] if record["epoch"] == exported)


class RunTask(LockedTask):
    """Shared by the stage-2 tasks: params and run directory (progress: LockedTask.report)."""

    def train_params(self):
        return current_train_params()

    def preprocess_task(self):
        return Preprocess()

    def run_dir(self) -> Path:
        return run_dir_of(self.train_params(), self.preprocess_task())

    def check_memory(self) -> None:
        check_memory(self.train_params(), self.preprocess_task())

    def wrote(self) -> str:
        return f"-> {self.output().path}"


class TrainDIN(RunTask):
    """Train DIN on the TFRecords (resuming a killed run); writes runs/<run_id>/metrics.json."""

    def requires(self):
        current_npu_options()  # scheduling checks [npu]: a bad value stops the run before stage 1
        return self.preprocess_task()

    def output(self):
        return luigi.LocalTarget(str(self.run_dir() / METRICS_FILE))

    def complete(self) -> bool:
        from din_model.train.run_files import training_complete

        metrics_path = self.output().path  # reads the settings and the spec first: reported before TF starts
        self.check_memory()
        return training_complete(metrics_path, self.train_params())

    def build(self) -> None:
        train_run(self.train_params(), self.preprocess_task(), self.report)

    def wrote(self) -> str:
        return f"saved model, curves.png, metrics.json -> {self.run_dir()}"

    def lock_name(self) -> str:
        worker = tf_config.worker_name()
        return f"{self.task_id}.{worker}" if worker else self.task_id


class EvaluateDIN(RunTask):
    """Test metrics, popularity (and oracle) baselines merged into metrics.json; writes evaluation.json."""

    def requires(self):
        current_npu_options()
        return TrainDIN()

    def output(self):
        return luigi.LocalTarget(str(self.run_dir() / EVALUATION_FILE))

    def build(self) -> None:
        self.report("evaluating on the test split", 0)
        evaluate_run(self.train_params(), self.preprocess_task())
        self.report("evaluation done", 100)
