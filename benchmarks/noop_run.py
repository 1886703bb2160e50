"""The cost of a `luigi --module pipeline TASK` command with nothing to do (everything up to date).

    python benchmarks/noop_run.py [--data-dir DIR] [--tasks TrainDIN,EvaluateDIN,AllTasks] [--repeats 3]

Run it from the project root to measure: the commands run there, with that tree's code on PYTHONPATH
(so `versus_commit.py --script-from-head` measures the base commit's tree with this script).
Builds a finished tiny run in DIR once (stage 1, one epoch of training, evaluation: not timed) unless
it is there, then runs the real `luigi` command for each task, `--repeats` times, and measures each
command process: wall seconds and peak RSS (`os.wait4`). Prints one JSON line: per task the median
wall seconds and peak RSS in MB (`tasks.TrainDIN.wall_s`, ...: keys for versus_commit.py --metric), and
`noop_s` / `noop_rss_mb`, the largest of them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TREE = Path.cwd()
LUIGI = Path(sys.executable).parent / "luigi"
TINY = ["--raw-synthetic-users", "300", "--raw-synthetic-items", "400", "--raw-synthetic-categories", "12",
        "--preprocess-num-shards", "2", "--preprocess-maxlen", "5", "--preprocess-prebatch", "64",
        "--train-epochs", "1", "--train-embed-dim", "4", "--train-device", "cpu"]


def command(task: str, data_dir: Path) -> list[str]:
    return [str(LUIGI), "--module", "pipeline", task, *TINY, "--paths-data-dir", str(data_dir)]


def measured(task: str, data_dir: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one command, which must say it had nothing to do."""
    started = time.perf_counter()
    process = subprocess.Popen(command(task, data_dir), cwd=TREE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONPATH": str(TREE)})
    output = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    if code != 0 or f"already up to date: {task}" not in output:
        raise SystemExit(f"ERROR: `{' '.join(command(task, data_dir))}` did not find everything up to date "
                         f"(exit {code}): {output.strip().splitlines()[-3:]}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/din-noop"))
    parser.add_argument("--tasks", default="TrainDIN,EvaluateDIN,AllTasks")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not (args.data_dir / "runs").is_dir():
        subprocess.run(command("AllTasks", args.data_dir), cwd=TREE, check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": str(TREE)})
    tasks = {}
    for task in args.tasks.split(","):
        runs = [measured(task, args.data_dir) for _ in range(args.repeats)]
        tasks[task] = {"wall_s": round(statistics.median(s for s, _ in runs), 2),
                       "peak_rss_mb": round(statistics.median(m for _, m in runs), 1)}
    print(json.dumps({"python": sys.version.split()[0], "tasks": tasks,
                      "noop_s": max(task["wall_s"] for task in tasks.values()),
                      "noop_rss_mb": max(task["peak_rss_mb"] for task in tasks.values())}))


if __name__ == "__main__":
    main()
