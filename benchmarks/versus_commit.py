"""Same-run comparison of this checkout against another commit, for any benchmark here that prints JSON.

    python benchmarks/versus_commit.py BASE_COMMIT [--rounds 3] [--metric total_s] -- preprocess.py --data-dir /tmp/b

Checks BASE_COMMIT out into a temporary git worktree, then runs `benchmarks/<script> <args>` alternately
from the base and from this checkout (base, head, base, head, ...: machine noise falls on both sides),
each run in its own process with PYTHONPATH pointing at its tree, so each imports its own code. Every
run's last JSON line is kept; `--metric` (a key of that line; dotted for nested keys) is compared.
Prints one JSON line: the machine (benchmarks/machine.py), each side's values, their medians and `head_over_base` (the ratio
of medians; for a time, below 1 means this checkout is faster), and every run's JSON line (`runs`).
Both sides must accept the same arguments; the data the benchmark generates is made by the first run
and reused by the others when the script supports it (preprocess.py and train.py do). With
`--script-from-head`, both sides run this checkout's script (for a benchmark newer than the base commit,
e.g. noop_run.py): each side still imports its own tree's code and reads its own luigi.cfg.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from machine import describe  # noqa: E402


def last_json(output: str) -> dict:
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("the benchmark printed no JSON line")


def metric_of(result: dict, dotted: str) -> float:
    value = result
    for key in dotted.split("."):
        value = value[key]
    return float(value)


def run_once(tree: Path, script_and_args: list[str], script_tree: Path | None = None) -> dict:
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    script = (script_tree or tree) / "benchmarks" / script_and_args[0]
    done = subprocess.run([sys.executable, str(script), *script_and_args[1:]],
                          cwd=tree, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ERROR: {script_and_args[0]} failed in {tree} (exit {done.returncode}): "
                         f"{done.stderr.strip().splitlines()[-1:] or 'no output'}")
    return last_json(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base", help="the commit to compare against (any git revision)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per side, alternating")
    parser.add_argument("--metric", default="total_s", help="the JSON key compared (dotted for nested keys)")
    parser.add_argument("--script-from-head", action="store_true",
                        help="run this checkout's benchmark script on both sides (each imports its own code)")
    argv = sys.argv[1:]
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("name the benchmark after --, e.g. -- preprocess.py --data-dir /tmp/b")
    split = argv.index("--")
    args, benchmark = parser.parse_args(argv[:split]), argv[split + 1:]
    values, runs = {"base": [], "head": []}, {"base": [], "head": []}
    with tempfile.TemporaryDirectory(prefix="din-versus-") as scratch:
        base_tree = Path(scratch) / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(base_tree), args.base],
                       check=True)
        try:
            for _ in range(args.rounds):
                for side, tree in (("base", base_tree), ("head", REPO)):
                    runs[side].append(run_once(tree, benchmark, REPO if args.script_from_head else None))
                    values[side].append(metric_of(runs[side][-1], args.metric))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base_tree)], check=False)
    medians = {side: statistics.median(found) for side, found in values.items()}
    print(json.dumps({"machine": describe(), "benchmark": benchmark, "metric": args.metric, "base": args.base,
                      "values": values, "median": medians,
                      "head_over_base": round(medians["head"] / medians["base"], 4), "runs": runs}))


if __name__ == "__main__":
    main()
