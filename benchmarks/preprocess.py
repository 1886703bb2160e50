"""Stage-1 benchmark: raw pickles -> finished TFRecords, through the real Luigi tasks.

    python benchmarks/preprocess.py [--data-dir DIR] [--scale 1] [--workers 2]

Makes full-Electronics-scale raw pickles with the synthetic generator unless DIR
already holds raw/reviews.pkl and raw/meta.pkl (not timed), removes earlier
stage-1 outputs, then runs each stage as its own Luigi build (so each can be
timed) with `[raw] source = pickle`. Prints one JSON line: seconds per stage,
total_s, CPU seconds per stage (this process and its worker processes: steadier
than wall time on a shared machine), peak RSS (the same processes), samples written,
and the cost of the pickle sandbox: loading and checking the two raw pickles
as RemapIds does (in the sandbox) against the same in this process
(allow-list only) and against plain `pd.read_pickle` (no protection), best
of `--load-repeats`, with the sandbox's share of total_s.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import luigi  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402

from din_common.feature_spec import FeatureSpec  # noqa: E402
from pipeline.raw import synthetic  # noqa: E402
from pipeline.tasks.stage1 import BuildSequences, Preprocess, RemapIds, WriteTFRecords  # noqa: E402

ELECTRONICS = {"users": 192_403, "items": 63_001, "categories": 801}


def ensure_raw(data_dir: Path, scale: int, seed: int) -> float:
    raw_dir = data_dir / "raw"
    if (raw_dir / "reviews.pkl").is_file() and (raw_dir / "meta.pkl").is_file():
        return 0.0
    start = time.perf_counter()
    synthetic.write_raw(raw_dir, ELECTRONICS["users"] * scale, ELECTRONICS["items"] * scale,
                        ELECTRONICS["categories"], seed)
    return time.perf_counter() - start


def configure(data_dir: Path, num_shards: int) -> None:
    cfg = luigi.configuration.get_config()
    cfg.set("paths", "data_dir", str(data_dir))
    cfg.set("raw", "source", "pickle")
    if num_shards:
        cfg.set("preprocess", "num_shards", str(num_shards))


def peak_rss_mb() -> dict:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(max(own, workers), 1), "peak_rss_main_mb": round(own, 1),
            "peak_rss_workers_mb": round(workers, 1)}


def best_of(repeats: int, load) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        load()
        times.append(time.perf_counter() - start)
    return min(times)


def raw_loading(raw_dir: Path, repeats: int, total_s: float) -> dict:
    """Seconds to load and check reviews.pkl + meta.pkl with and without the sandbox, same run."""
    import pandas as pd

    from pipeline.raw import pickles
    from pipeline.untrusted.unpickler import safe_load

    paths = (raw_dir / "reviews.pkl", raw_dir / "meta.pkl")
    checks = (pickles.check_reviews, pickles.check_meta)
    sandboxed = best_of(repeats, lambda: pickles.load_raw_pickles(*paths))
    in_process = best_of(repeats, lambda: [check([safe_load(p)], str(p)) for check, p in zip(checks, paths)])
    plain = best_of(repeats, lambda: [check([pd.read_pickle(p)], str(p)) for check, p in zip(checks, paths)])
    return {
        "raw_load_sandboxed_s": round(sandboxed, 3), "raw_load_in_process_s": round(in_process, 3),
        "raw_load_plain_read_pickle_s": round(plain, 3),
        "sandbox_cost_fraction_of_stage1": round((sandboxed - in_process) / total_s, 4),
        "protection_cost_fraction_of_stage1": round((sandboxed - plain) / total_s, 4),
    }


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished worker processes."""
    # Luigi's task processes report back before they exit; wait for them, so their time counts now.
    for child in multiprocessing.active_children():
        child.join()
    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/din-bench-preprocess"))
    parser.add_argument("--scale", type=int, default=1, help="multiple of Electronics users and items")
    parser.add_argument("--workers", type=int, default=2, help="Luigi worker processes for the shard tasks")
    parser.add_argument("--num-shards", type=int, default=0, help="override [preprocess] num_shards")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--load-repeats", type=int, default=3, help="timings of raw pickle loading (best of)")
    args = parser.parse_args()

    generate_s = ensure_raw(args.data_dir, args.scale, args.seed)
    for stage in ("remap", "sequences", "tfrecords"):
        shutil.rmtree(args.data_dir / stage, ignore_errors=True)
    configure(args.data_dir, args.num_shards)

    from pipeline.settings import Settings
    shards = range(Settings.current().num_shards)
    stages = {
        "remap_s": [RemapIds()],
        "sequences_s": [BuildSequences(shard=s) for s in shards],
        "tfrecords_s": [WriteTFRecords(shard=s) for s in shards],
        "spec_s": [Preprocess()],
    }
    timings, cpu = {}, {}
    start, cpu_start = time.perf_counter(), cpu_seconds()
    for name, tasks in stages.items():
        stage_start, stage_cpu = time.perf_counter(), cpu_seconds()
        if not luigi.build(tasks, workers=args.workers, local_scheduler=True, log_level="WARNING"):
            sys.exit(f"stage {name} failed")
        timings[name] = round(time.perf_counter() - stage_start, 3)
        cpu[name] = round(cpu_seconds() - stage_cpu, 3)
    total_s, total_cpu_s = time.perf_counter() - start, cpu_seconds() - cpu_start

    spec = FeatureSpec.read(args.data_dir / "tfrecords" / "feature_spec.json")
    stats = json.loads((args.data_dir / "remap" / "stats.json").read_text())
    print(json.dumps({
        "benchmark": "preprocess", "scale": args.scale, "workers": args.workers,
        "num_shards": spec.num_shards, "reviews": stats["reviews_in"], "users": stats["n_users"],
        "items": stats["n_items"], "categories": stats["n_cats"],
        **timings, "total_s": round(total_s, 3), "cpu_s": {**cpu, "total_s": round(total_cpu_s, 3)},
        **peak_rss_mb(), "python": sys.version.split()[0],
        "versions": {module.__name__: module.__version__ for module in (np, pd, pa, luigi)},
        "samples_written": {split: spec.samples(split) for split in spec.splits},
        "generate_raw_s": round(generate_s, 3),
        **raw_loading(args.data_dir / "raw", args.load_repeats, total_s),
    }))


if __name__ == "__main__":
    main()
