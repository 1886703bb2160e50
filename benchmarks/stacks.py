"""Training speed of the same preset on several Python/TensorFlow stacks, alternating runs; prints JSON.

    python benchmarks/stacks.py --data-dir DIR --python modern=/path/python3.11 --python ascend=/path/python3.9
        [--pairs 3] [--preset reference] [--steps 40] [-- extra arguments of benchmarks/train.py]

Runs `benchmarks/train.py` (no reference baseline) under each interpreter in turn, `--pairs`
rounds, each in a fresh process on the same shards, so machine noise falls on every stack
alike; reports each stack's runs, its median train/input samples per second, its TensorFlow
version, and the ratio of every stack's median to the first one's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--python", action="append", required=True, metavar="NAME=INTERPRETER")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--preset", default="reference")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("extra", nargs="*", help="further arguments of benchmarks/train.py (after --)")
    return parser.parse_args(argv)


def run_once(interpreter: str, args) -> dict:
    command = [interpreter, str(ROOT / "benchmarks" / "train.py"), "--data-dir", str(args.data_dir), "--preset",
               args.preset, "--steps", str(args.steps), *args.extra]
    printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(printed.strip().splitlines()[-1])


def tensorflow_version(interpreter: str) -> str:
    return subprocess.run([interpreter, "-c", "import tensorflow as tf; print(tf.__version__)"], capture_output=True,
                          text=True, check=True).stdout.strip().splitlines()[-1]


def main(argv=None) -> None:
    args = parse_args(argv)
    stacks = dict(entry.split("=", 1) for entry in args.python)
    runs = {name: [] for name in stacks}
    for _ in range(args.pairs):
        for name, interpreter in stacks.items():
            runs[name].append(run_once(interpreter, args))
    first = next(iter(stacks))
    medians = {name: statistics.median(run["train_samples_per_s"] for run in results) for name, results in runs.items()}
    print(json.dumps({"preset": args.preset, "steps": args.steps, "pairs": args.pairs, "stacks": {
        name: {"python": stacks[name], "tensorflow": tensorflow_version(stacks[name]),
               "train_samples_per_s_runs": [run["train_samples_per_s"] for run in runs[name]],
               "train_samples_per_s_median": round(medians[name]),
               "input_samples_per_s_median": round(statistics.median(run["input_samples_per_s"] for run in runs[name])),
               f"ratio_to_{first}": round(medians[name] / medians[first], 3)}
        for name in stacks}}))


if __name__ == "__main__":
    main()
