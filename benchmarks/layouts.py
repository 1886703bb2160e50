"""Training speed of the history layouts with and without XLA, on one or more stacks; prints JSON.

    python benchmarks/layouts.py --data-dir DIR --python modern=/path/python3.11 [--python ascend=/path/python3.9]
        [--rounds 3] [--preset reference] [--steps 40] [-- extra arguments of benchmarks/train.py]

Each round runs benchmarks/train.py once per (stack, layout, XLA) combination, each in a
fresh process, in the same order; the order of the combinations is reversed every other
round, so the drift of a shared machine falls on all alike. Combinations: dense, compact
and static_compact, each plain (`--xla off`) and with `--xla on`, except compact with XLA (its shapes depend
on the data, which XLA cannot compile). Reports every combination's runs and median, and
per stack each median's ratio to the plain compact layout's (the CPU default before the
static layout) and to the stack's fastest combination.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMBINATIONS = (("compact", False), ("static_compact", False), ("static_compact", True), ("dense", False),
                ("dense", True))


def run_once(interpreter: str, args, layout: str, jit: bool) -> int:
    command = [interpreter, str(ROOT / "benchmarks" / "train.py"), "--data-dir", str(args.data_dir), "--preset",
               args.preset, "--steps", str(args.steps), "--history-layout", layout, "--xla", "on" if jit else "off",
               *args.extra]
    printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(printed.strip().splitlines()[-1])["train_samples_per_s"]


def name_of(layout: str, jit: bool) -> str:
    return f"{layout}{'+xla' if jit else ''}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--python", action="append", required=True, metavar="NAME=INTERPRETER")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--preset", default="reference")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("extra", nargs="*", help="further arguments of benchmarks/train.py (after --)")
    args = parser.parse_args(argv)
    stacks = dict(entry.split("=", 1) for entry in args.python)
    plan = [(stack, layout, jit) for stack in stacks for layout, jit in COMBINATIONS]
    runs = {(stack, name_of(layout, jit)): [] for stack, layout, jit in plan}
    for index in range(args.rounds):
        for stack, layout, jit in (plan if index % 2 == 0 else plan[::-1]):
            runs[(stack, name_of(layout, jit))].append(run_once(stacks[stack], args, layout, jit))
    report = {}
    for stack in stacks:
        medians = {name: statistics.median(rates) for (owner, name), rates in runs.items() if owner == stack}
        fastest = max(medians.values())
        report[stack] = {name: {"train_samples_per_s_runs": runs[(stack, name)],
                                "median": round(median),
                                "ratio_to_compact": round(median / medians["compact"], 3),
                                "ratio_to_fastest": round(median / fastest, 3)}
                         for name, median in medians.items()}
    print(json.dumps({"preset": args.preset, "steps": args.steps, "rounds": args.rounds, "extra": args.extra,
                      "stacks": {name: {"python": stacks[name], **report[name]} for name in stacks}}))


if __name__ == "__main__":
    main()
