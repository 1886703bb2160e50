"""Accuracy sweep: train DIN variants on one stage-1 data dir, compare with popularity and the oracle.

    python benchmarks/accuracy.py --data-dir DIR [--set key=value ...] [--variant name:key=value,key=value ...]

DIR must hold finished TFRecords (run `luigi --module pipeline Preprocess --paths-data-dir DIR`
first); `raw/oracle.json` (synthetic data) adds the oracle AUC and the share of the
popularity-to-oracle gap each variant closes. `--set` changes the base parameters of
every variant (the project defaults otherwise). Prints one JSON line per variant.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from din_model.params import TrainParams, run_id  # noqa: E402
from din_model.training import evaluate, train  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--set", default="", help="base overrides, e.g. epochs=5,learning_rate=0.004")
    parser.add_argument("--variant", action="append", default=[],
                        help="name:key=value,... (repeatable); default: the base parameters alone")
    parser.add_argument("--keep-runs", action="store_true")
    args = parser.parse_args()

    spec_path = args.data_dir / "tfrecords" / "feature_spec.json"
    spec = json.loads(spec_path.read_text())
    oracle_path = args.data_dir / "raw" / "oracle.json"
    base = {"device": "cpu", **parse_assignments(args.set)}
    variants = [v.split(":", 1) if ":" in v else (v, "") for v in args.variant] or [("base", "")]
    for name, assignments in variants:
        params = TrainParams(**{**base, **parse_assignments(assignments)})
        run_dir = args.data_dir / "runs" / f"sweep-{run_id(params, spec['fingerprint'])}"
        start = time.perf_counter()
        trained = train(spec_path, run_dir, params)
        metrics = evaluate(spec_path, run_dir, params, oracle_path=oracle_path if oracle_path.exists() else None)
        print(json.dumps({
            "variant": name, "changes": assignments, "seconds": round(time.perf_counter() - start, 1),
            "val_auc": round(trained["epochs"][-1]["val"]["auc"], 4),
            "val_auc_by_epoch": [round(e["val"]["auc"], 4) for e in trained["epochs"]],
            "test_auc": round(metrics["test"]["auc"], 4), "test_gauc": round(metrics["test"]["gauc"], 4),
            "popularity_test_auc": round(metrics["popularity_test_auc"], 4),
            "oracle_test_auc": metrics.get("oracle_test_auc"), "gap_closed": metrics.get("gap_closed"),
        }), flush=True)
        if not args.keep_runs:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
