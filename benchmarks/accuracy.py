"""Accuracy sweep: train DIN variants on one stage-1 data dir, compare with popularity and the oracle.

    python benchmarks/accuracy.py --data-dir DIR [--set key=value ...] [--variant name:key=value,key=value ...]
        [--seeds 42,1,4]

DIR must hold finished TFRecords (run `luigi --module pipeline Preprocess --paths-data-dir DIR`
first); `raw/oracle.json` (synthetic data) adds the oracle AUC and the share of the
popularity-to-oracle gap each variant closes. `--set` changes the base parameters of
every variant (the project defaults otherwise). Prints one JSON line per variant and seed, with
RelaImpr against popularity and, for din_seq variants, against the `model=din` variant of the same
seed when one ran before it; with `--seeds`, a summary line per variant (mean, min, max over seeds).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from din_model.params import TrainParams, run_id  # noqa: E402
from din_model.run.loop import evaluate, train  # noqa: E402


def parse_assignments(text: str) -> dict:
    values = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=", 1)
        field_type = {f.name: f.type for f in dataclasses.fields(TrainParams)}[key]
        if "bool" in str(field_type):
            values[key] = value.lower() in ("1", "true", "yes")
        elif "int" in str(field_type) and "float" not in str(field_type):
            values[key] = int(value)
        elif "float" in str(field_type):
            values[key] = float(value)
        else:
            values[key] = value
    return values


def run_variant(data_dir: Path, spec: dict, params: TrainParams, plain_din_auc: float | None, keep: bool) -> dict:
    """Train and evaluate one variant; its metrics (RelaImpr against `plain_din_auc` when given)."""
    spec_path = data_dir / "tfrecords" / "feature_spec.json"
    oracle_path = data_dir / "raw" / "oracle.json"
    run_dir = data_dir / "runs" / f"sweep-{run_id(params, spec['fingerprint'])}"
    start = time.perf_counter()
    trained = train(spec_path, run_dir, params)
    metrics = evaluate(spec_path, run_dir, params, oracle_path=oracle_path if oracle_path.exists() else None,
                       plain_din_auc=plain_din_auc)
    if not keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"seconds": round(time.perf_counter() - start, 1),
            "train_samples_per_s_last_epoch": trained["epochs"][-1].get("train_samples_per_s"),
            "val_auc": round(trained["epochs"][-1]["val"]["auc"], 4),
            "val_auc_by_epoch": [round(e["val"]["auc"], 4) for e in trained["epochs"]],
            "test_auc": round(metrics["test"]["auc"], 4), "test_gauc": round(metrics["test"]["gauc"], 4),
            "popularity_test_auc": round(metrics["popularity_test_auc"], 4),
            "oracle_test_auc": metrics.get("oracle_test_auc"), "gap_closed": metrics.get("gap_closed"),
            "rela_impr": metrics.get("rela_impr")}


def summarise(name: str, results: list) -> dict:
    """Mean and spread over seeds of a variant's figures."""
    summary = {"variant": name, "seeds": len(results)}
    for key in ("val_auc", "test_auc", "test_gauc", "gap_closed"):
        values = [result[key] for result in results if result.get(key) is not None]
        if values:
            summary[key] = {"mean": round(statistics.mean(values), 4), "min": round(min(values), 4),
                            "max": round(max(values), 4)}
    vs_din = [result["rela_impr"]["vs_din"] for result in results if (result.get("rela_impr") or {}).get("vs_din")
              is not None]
    if vs_din:
        summary["rela_impr_vs_din_mean"] = round(statistics.mean(vs_din), 4)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--set", default="", help="base overrides, e.g. epochs=5,learning_rate=0.004")
    parser.add_argument("--variant", action="append", default=[],
                        help="name:key=value,... (repeatable); default: the base parameters alone")
    parser.add_argument("--seeds", default="", help="comma-separated training seeds; each variant runs once per "
                                                    "seed and a summary line follows (default: the base seed)")
    parser.add_argument("--keep-runs", action="store_true")
    args = parser.parse_args()

    spec = json.loads((args.data_dir / "tfrecords" / "feature_spec.json").read_text())
    base = {"device": "cpu", **parse_assignments(args.set)}
    variants = [v.split(":", 1) if ":" in v else (v, "") for v in args.variant] or [("base", "")]
    seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()] or [None]
    results = {name: [] for name, _ in variants}
    for seed in seeds:
        plain_din_auc = None  # the model=din variant's test AUC of this seed, once it has run
        for name, assignments in variants:
            values = {**base, **parse_assignments(assignments)}
            if seed is not None:
                values["seed"] = seed
            params = TrainParams(**values)
            result = run_variant(args.data_dir, spec, params, plain_din_auc if params.model != "din" else None,
                                 args.keep_runs)
            if params.model == "din":
                plain_din_auc = result["test_auc"]
            results[name].append(result)
            print(json.dumps({"variant": name, "changes": assignments, "seed": params.seed, **result}), flush=True)
    if seeds != [None]:
        for name, _ in variants:
            print(json.dumps({"summary": summarise(name, results[name])}), flush=True)


if __name__ == "__main__":
    main()
