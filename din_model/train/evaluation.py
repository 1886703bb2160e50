"""Scoring a split and evaluating a run: test metrics and the baselines they are compared with.

- `predict_split`: probabilities of a whole split, streamed (static-shape devices get
  their last batch padded and the padding dropped).
- `evaluate`: test AUC, GAUC and logloss of the exported checkpoint (the best epoch's with
  `[train] restore_best`, else the last; written on either supported stack), the item-popularity baseline and, on synthetic data
  (`raw/oracle.json`), the oracle AUC and the share of the popularity-to-oracle gap closed;
  RelaImpr against popularity and against plain DIN (the `model = din` run of the same
  settings and shards, when it has been evaluated); merged into metrics.json.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from din_common.atomic import write_json_atomic
from din_common.errors import InputError
from din_common import metrics as metric_functions
from din_common.feature_spec import FeatureSpec
from din_model.device.selection import DeviceChoice, select_device
from din_model.params import TrainParams, run_id
from din_model.data.reader import batches_with_rows, feature_spec_at, iterate_checked, make_dataset, split_files
from din_model.train.policies import fixed_batches
from din_model.train.portable_weights import restore_weights
from din_model.train.run_files import RunFiles, read_metrics
from din_model.train.state import TrainingState
from din_model.train import steps

EVAL_BATCH_SIZE = 8192


def predict_split(predict_step, spec: FeatureSpec, split: str, params: TrainParams, device: DeviceChoice) -> dict:
    """Numpy columns user_id, target_item, label, probability of a whole split (no features kept)."""
    fixed = fixed_batches(params, device)  # the predict step's signature has batch_size rows: the last is padded
    batch_size = params.batch_size if fixed else max(params.batch_size, EVAL_BATCH_SIZE)
    dataset = batches_with_rows(make_dataset(spec, split, batch_size, shuffle=False, maxlen=params.maxlen,
                                             history_fields=params.history_features), batch_size if fixed else None)
    columns = {"user_id": [], "target_item": [], "label": [], "probability": []}
    for features, label, rows in iterate_checked(dataset, split_files(spec, split)):
        rows = int(rows)
        columns["probability"].append(predict_step(features).numpy()[:rows])
        columns["user_id"].append(features["user_id"].numpy()[:rows])
        columns["target_item"].append(features["target_item"].numpy()[:rows])
        columns["label"].append(label.numpy()[:rows])
    if not columns["label"]:
        raise InputError(f"the {split} split of the TFRecords holds no samples")
    return {name: np.concatenate(parts) for name, parts in columns.items()}


def split_metrics(columns: dict) -> dict[str, float]:
    return metric_functions.all_metrics(columns["user_id"], columns["label"], columns["probability"])


def popularity_scores(spec: FeatureSpec, test_items: np.ndarray) -> np.ndarray:
    """How often each test target item is a positive target in the train split (one streamed pass, batches of
    one static shape: under the NPU adapter even this eager read of the data runs on the NPU)."""
    counter = metric_functions.PopularityCounter(spec.n_items)
    dataset = batches_with_rows(make_dataset(spec, "train", EVAL_BATCH_SIZE, maxlen=1, history_fields=()),
                                EVAL_BATCH_SIZE)
    for features, labels, rows in iterate_checked(dataset, split_files(spec, "train")):
        counter.add(features["target_item"].numpy()[:rows], labels.numpy()[:rows])
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


def default_oracle_path(spec: FeatureSpec) -> Path:
    """raw/oracle.json of the data directory whose tfrecords/ the spec lies in."""
    return spec.directory.resolve().parent / "raw" / "oracle.json"


def plain_din_test_auc(run_dir: Path, params: TrainParams, spec: FeatureSpec, npu_numerics: dict | None = None) -> float | None:
    """Test AUC of the plain-DIN twin of this run (same settings but `model = din`, same shards, same NPU
    numerics), a sibling run directory under the same runs/ folder, if it has been evaluated."""
    twin = Path(run_dir).parent / run_id(dataclasses.replace(params, model="din"), spec.fingerprint or "",
                                         npu_numerics, spec.content_fingerprint())
    return read_metrics(RunFiles(twin).metrics).get("test", {}).get("auc")


def relative_improvements(test_auc: float, popularity_auc: float, din_auc: float | None) -> dict:
    """RelaImpr of this run's test AUC against item popularity and against plain DIN (None if unknown)."""
    return {"vs_popularity": metric_functions.rela_impr(test_auc, popularity_auc),
            "vs_din": None if din_auc is None else metric_functions.rela_impr(test_auc, din_auc)}


def evaluate(spec_path: str | Path | FeatureSpec, run_dir, params: TrainParams, *, oracle_path: str | Path | None = None,
             plain_din_auc: float | None = None, npu_numerics: dict | None = None) -> dict:
    """Test metrics of the exported checkpoint (`TrainingState.checkpoint_to_export`) + baselines, merged into
    metrics.json under `test`.

    `plain_din_auc`: the plain-DIN test AUC to compute RelaImpr against; by default that of
    this run's plain-DIN twin (`plain_din_test_auc`, with the run id's `npu_numerics`), or this run's own
    for a plain-DIN run.
    """
    spec = feature_spec_at(spec_path)
    files = RunFiles(run_dir)
    device = select_device(params.device, params.precision, deterministic=params.deterministic)
    with device.scope():
        state = TrainingState(params, spec, device, files.checkpoints)
        checkpoint = state.checkpoint_to_export(params.restore_best)
        if not checkpoint:
            raise InputError(f"{files.checkpoints}: no checkpoint to evaluate; run training first (TrainDIN)")
        restore_weights(state.model, checkpoint, state.checkpoint)
        test = predict_split(steps.make_predict_step(state.model, steps.step_signature(spec, params, device)), spec, "test",
                             params, device)
    result = {"test": split_metrics(test),
              "popularity_test_auc": metric_functions.auc(test["label"], popularity_scores(spec, test["target_item"]))}
    if plain_din_auc is None:
        plain_din_auc = (result["test"]["auc"] if params.model == "din"
                         else plain_din_test_auc(run_dir, params, spec, npu_numerics))
    result["rela_impr"] = relative_improvements(result["test"]["auc"], result["popularity_test_auc"], plain_din_auc)
    oracle_path = Path(oracle_path) if oracle_path else default_oracle_path(spec)
    oracle_auc = read_oracle_auc(oracle_path) if oracle_path else None
    if oracle_auc is not None:
        result["oracle_test_auc"] = oracle_auc
        gap = oracle_auc - result["popularity_test_auc"]
        result["gap_closed"] = (result["test"]["auc"] - result["popularity_test_auc"]) / gap if gap else None
    write_json_atomic(files.metrics, {**read_metrics(files.metrics), **result})
    oracle_text = (f"; oracle auc {oracle_auc:.4f}, gap to the oracle closed {result['gap_closed']:.1%}"
                   if result.get("gap_closed") is not None else "")
    print(f"[evaluate] test auc {result['test']['auc']:.4f} gauc {result['test']['gauc']:.4f} "
          f"logloss {result['test']['logloss']:.4f}; popularity auc {result['popularity_test_auc']:.4f}{oracle_text}"
          f"; {_rela_impr_text(result['rela_impr'], params)}", flush=True)
    return read_metrics(files.metrics)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def _rela_impr_text(improvements: dict, params: TrainParams) -> str:
    text = f"RelaImpr vs popularity {_percent(improvements['vs_popularity'])}"
    if params.model == "din":
        return text
    if improvements["vs_din"] is None:
        return text + " (RelaImpr vs plain DIN: evaluate the same settings with --train-model din first)"
    return text + f", vs plain DIN {_percent(improvements['vs_din'])}"
