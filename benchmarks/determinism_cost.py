"""The speed cost of `[train] deterministic = true`; prints one JSON line.

    python benchmarks/determinism_cost.py --data-dir DIR [--pairs 3] [--epochs 3] [--workdir DIR]

Stage 1 runs once into DIR (the default synthetic data unless DIR already holds it). Then, in pairs, the
real `luigi --module pipeline TrainDIN` command trains the same settings with and without
`--train-deterministic true`, alternating which goes first, each into a fresh run folder: op determinism is
switched on for a whole process and cannot be switched off, so every training runs in a process of its
own. A run's speed is the mean of its epochs' train samples/s from metrics.json after the first epoch
(which also traces the step). The figure is the per-pair ratio deterministic / default and its median.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def luigi(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "luigi", "--module", "pipeline", *args, "--paths-data-dir", str(data_dir)]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True)
    if result.returncode != 0:
        sys.exit(f"ERROR: {' '.join(command)} failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return result


def train_speed(data_dir: Path, epochs: int, deterministic: bool) -> float:
    """Mean train samples/s over epochs 2.. of a fresh TrainDIN run (its folder removed afterwards)."""
    flags = ["--train-epochs", str(epochs), "--train-device", "cpu"] + (["--train-deterministic", "true"] if deterministic
                                                                        else [])
    output = luigi(data_dir, "TrainDIN", *flags).stdout
    run_line = next(line for line in output.splitlines() if line.startswith("[TrainDIN] run "))
    run_dir = data_dir / "runs" / run_line.split()[2].rstrip(":")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    shutil.rmtree(run_dir)
    speeds = [record["train_samples_per_s"] for record in metrics["epochs"]]
    return statistics.mean(speeds[1:] or speeds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    luigi(args.data_dir, "Preprocess")
    pairs = []
    for index in range(args.pairs):
        order = (False, True) if index % 2 == 0 else (True, False)
        speeds = {deterministic: train_speed(args.data_dir, args.epochs, deterministic) for deterministic in order}
        pairs.append({"default_samples_per_s": round(speeds[False]), "deterministic_samples_per_s": round(speeds[True]),
                      "ratio": round(speeds[True] / speeds[False], 3)})
    import tensorflow as tf

    print(json.dumps({"tensorflow": tf.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
                      "epochs": args.epochs, "pairs": pairs,
                      "median_ratio": round(statistics.median(pair["ratio"] for pair in pairs), 3)}))


if __name__ == "__main__":
    main()
