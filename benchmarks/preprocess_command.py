"""Stage 1 as a user runs it: `luigi --module pipeline Preprocess --raw-source pickle`, timed whole.

    python benchmarks/preprocess_command.py [--data-dir DIR] [--reference] [-- extra luigi arguments]

Makes full-Electronics-scale raw pickles with the synthetic generator unless DIR/raw holds them
(not timed; benchmarks/preprocess.py's generator and seed), removes earlier stage-1 outputs, then
runs the default command in a fresh process from the current directory (whose luigi.cfg it reads;
the code is whatever `pipeline` that process imports: PYTHONPATH decides, as
benchmarks/versus_commit.py sets it). Then a no-op run of the same command (everything up to date:
process start-up and scheduling). With `--reference`, the reference preprocessing
(benchmarks/reference_preprocess.py) runs after it on the same pickles, and `speedup` is its
time over ours. Prints one JSON line: wall and CPU seconds (the command and every process it
started), peak RSS of the largest process, wall and CPU seconds of the no-op run, the same for the
reference, and the machine (benchmarks/machine.py).
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))
from machine import describe  # noqa: E402


def timed(command: list[str]) -> dict:
    """Run `command`; its wall seconds, CPU seconds and peak RSS (this process's waited-for children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"ERROR: {' '.join(command[:6])} ... failed (exit {done.returncode}): {tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # ru_maxrss of children is the largest of any child so far: runs are ordered so that it is read per run.
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "peak_rss_mb": round(after.ru_maxrss / 1024, 1),
            "stdout": done.stdout}


def ensure_raw(data_dir: Path) -> None:
    if (data_dir / "raw" / "reviews.pkl").is_file() and (data_dir / "raw" / "meta.pkl").is_file():
        return
    subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['preprocess.py']; import preprocess; "
                    f"from pathlib import Path; preprocess.ensure_raw(Path({str(data_dir)!r}), 1, 1)"],
                   cwd=BENCHMARKS, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/din-bench-preprocess"))
    parser.add_argument("--reference", action="store_true", help="also time the reference preprocessing")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    ensure_raw(args.data_dir)
    for stage in ("remap", "sequences", "tfrecords", ".locks"):
        shutil.rmtree(args.data_dir / stage, ignore_errors=True)
    command = [sys.executable, "-m", "luigi", "--module", "pipeline", "Preprocess", "--raw-source", "pickle",
               "--paths-data-dir", str(args.data_dir), *extra]
    run = timed(command)
    if "stage 1 done" not in run.pop("stdout"):
        raise SystemExit("ERROR: the command ran but printed no 'stage 1 done' line")
    noop = timed(command)
    noop.pop("stdout")
    noop.pop("peak_rss_mb")  # the largest child so far: the full run's
    result = {"benchmark": "preprocess_command", "command": " ".join(["luigi", *command[3:]]), **run,
              "noop": noop, "python": sys.version.split()[0], "machine": describe()}
    if args.reference:
        reference = timed([sys.executable, str(BENCHMARKS / "reference_preprocess.py"),
                           "--data-dir", str(args.data_dir)])
        steps = json.loads(reference.pop("stdout").strip().splitlines()[-1])
        reference["peak_rss_mb"] = steps["peak_rss_mb"]  # its own: ours is the largest child so far
        result["reference"] = {**reference, "steps": {k: v for k, v in steps.items() if k.endswith("_s")}}
        result["speedup"] = round(reference["wall_s"] / run["wall_s"], 2)
        result["speedup_cpu"] = round(reference["cpu_s"] / run["cpu_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
