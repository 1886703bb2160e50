"""Training speed of din_seq's order-aware inputs against plain DIN, alternating processes; prints JSON.

    python benchmarks/sequence_cost.py --data-dir DIR [--pairs 3] [--steps 60] [--warmup 15]
        [--features recency,time_gap,last_item --features recency ...] [-- extra arguments of benchmarks/train.py]

For each feature set, each pair runs benchmarks/train.py (default preset, streaming from the
shards) with `--model din` and with `--model din_seq --sequence-features SET`, each in a fresh
process, order flipped every pair. Reports every pair's speed ratio (din_seq / din), the
median and the spread: a cost of 10 % is a ratio of 0.90.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from vs_reference import add_pair_arguments, last_json_line  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pair_arguments(parser)
    parser.add_argument("--features", action="append", default=[],
                        help="a din_seq feature set (repeatable); default: recency,time_gap,last_item")
    parser.add_argument("extra", nargs="*", help="further arguments of benchmarks/train.py (after --)")
    args = parser.parse_args(argv)
    base = [sys.executable, str(ROOT / "benchmarks" / "train.py"), "--preset", "default", "--data-dir",
            str(args.data_dir), "--steps", str(args.steps), "--warmup", str(args.warmup), *args.extra]
    for features in args.features or ["recency,time_gap,last_item"]:
        commands = {"din": base + ["--model", "din"],
                    "din_seq": base + ["--model", "din_seq", "--sequence-features", features]}
        pairs = []
        for index in range(args.pairs):
            order = ("din", "din_seq") if index % 2 == 0 else ("din_seq", "din")
            rates = {side: last_json_line(commands[side])["train_samples_per_s"] for side in order}
            pairs.append({**rates, "ratio": round(rates["din_seq"] / rates["din"], 3), "first": order[0]})
        ratios = [pair["ratio"] for pair in pairs]
        print(json.dumps({"sequence_features": features, "pairs": pairs,
                          "median_ratio": round(statistics.median(ratios), 3),
                          "ratio_spread": [min(ratios), max(ratios)], "command_extra": args.extra}), flush=True)


if __name__ == "__main__":
    main()
