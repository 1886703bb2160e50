"""Our trainer's `reference` preset against the reference DIN code, alternating processes; prints JSON.

    python benchmarks/vs_reference.py --data-dir DIR [--pairs 3] [--steps 80] [--warmup 15]
        [-- extra arguments of benchmarks/train.py, e.g. --jit]

Each pair runs benchmarks/train.py (streaming from the shards) and then
benchmarks/reference_din.py (tf.keras 2, `fit` on in-memory arrays), each in a fresh
process, with the same statistic: the median samples/s of 5 windows of steps/5 batches after
`--warmup` batches. The order flips every pair so a drift of the shared machine falls on
both sides alike. Reports every pair's ratio, their median and spread (min, max).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.machine import describe  # noqa: E402


def last_json_line(command: list) -> dict:
    printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(printed.strip().splitlines()[-1])


def add_pair_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of a benchmark that alternates two processes over several pairs."""
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=80)  # windows of 16 steps: one call of training's step loop
    parser.add_argument("--warmup", type=int, default=15)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pair_arguments(parser)
    parser.add_argument("extra", nargs="*", help="further arguments of benchmarks/train.py (after --)")
    args = parser.parse_args(argv)
    windows = ["--data-dir", str(args.data_dir), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    ours_command = [sys.executable, str(ROOT / "benchmarks" / "train.py"), "--preset", "reference", *windows,
                    *args.extra]
    reference_command = [sys.executable, str(ROOT / "benchmarks" / "reference_din.py"), *windows]
    pairs = []
    for index in range(args.pairs):
        order = ("ours", "reference") if index % 2 == 0 else ("reference", "ours")
        results = {side: last_json_line(ours_command if side == "ours" else reference_command) for side in order}
        ours = results["ours"]["train_samples_per_s"]
        reference = results["reference"]["reference_keras_fit_samples_per_s"]
        pairs.append({"ours": ours, "reference": reference, "ratio": round(ours / reference, 3),
                      "first": order[0]})
    ratios = [pair["ratio"] for pair in pairs]
    print(json.dumps({"pairs": pairs, "median_ratio": round(statistics.median(ratios), 3),
                      "ratio_spread": [min(ratios), max(ratios)],
                      "ours_median": round(statistics.median(pair["ours"] for pair in pairs)),
                      "reference_median": round(statistics.median(pair["reference"] for pair in pairs)),
                      "ours_settings": results["ours"], "reference_settings": {
                          key: value for key, value in results["reference"].items()
                          if key not in ("reference_keras_fit_samples_per_s", "window_samples_per_s", "machine")},
                      "command_extra": args.extra, "machine": describe()}))


if __name__ == "__main__":
    main()
