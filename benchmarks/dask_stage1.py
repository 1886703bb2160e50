"""Stage 1 on the dask engine (a LocalCluster) and the local engine, at n x Electronics, from raw parquet.

    python benchmarks/dask_stage1.py --data-dir DIR --scale 50 [--engines dask,local] [--workers 2]
        [--memory-limit 8GB] [--num-shards 32] [--until BuildSequences] [--keep]

Writes DIR/raw/{reviews,meta}/ with pipeline.raw.synthetic_parquet (`scale` copies of the
Electronics-sized block; not timed, reused when present), then for each engine removes the
stage-1 outputs and runs `Preprocess` through Luigi in a child process, so each engine's peak
memory is its own. Prints one JSON line per engine: wall seconds per stage, peak RSS of the
Luigi process and of the largest process it started (a dask worker), output bytes, the CPU
model, and whether the outputs' sha256 equal the previous engine's. --until stops after that
stage (where the disk cannot hold every output). Without --keep, the stage-1 outputs are
deleted at the end (the raw parquet stays).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ELECTRONICS = {"users": 192_403, "items": 63_001, "categories": 801}
STAGE_DIRS = ("remap", "sequences", "tfrecords")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def ensure_raw(data_dir: Path, scale: int, seed: int) -> dict:
    from pipeline.raw.synthetic_parquet import write_raw_parquet
    raw_dir = data_dir / "raw"
    if len(list((raw_dir / "reviews").glob("*.parquet"))) == scale:
        return {"raw_written_s": 0.0}
    shutil.rmtree(raw_dir, ignore_errors=True)
    start = time.perf_counter()
    info = write_raw_parquet(raw_dir, ELECTRONICS["users"], ELECTRONICS["items"], ELECTRONICS["categories"], seed,
                             copies=scale)
    return {**info, "raw_written_s": round(time.perf_counter() - start, 1)}


def outputs_digest(data_dir: Path) -> tuple[str, int]:
    """sha256 over every stage-1 output file (path and bytes), and their total size."""
    digest, size = hashlib.sha256(), 0
    for path in sorted(p for name in STAGE_DIRS for p in (data_dir / name).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(data_dir)).encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
        size += path.stat().st_size
    return digest.hexdigest(), size


def run_one(args) -> dict:
    """In the child: Preprocess through Luigi, each stage its own build so each is timed."""
    import luigi
    from pipeline.tasks.stage1 import BuildSequences, Preprocess, RemapIds, WriteTFRecords
    cfg = luigi.configuration.get_config()
    settings = {("paths", "data_dir"): str(args.data_dir), ("raw", "source"): "parquet",
                ("preprocess", "engine"): args.run_one, ("preprocess", "num_shards"): str(args.num_shards),
                ("dask", "workers"): str(args.workers), ("dask", "threads_per_worker"): "1",
                ("dask", "memory_limit"): args.memory_limit}
    for (section, key), value in settings.items():
        cfg.set(section, key, value)
    seconds = {}
    shards = range(args.num_shards)
    for stage, tasks in (("RemapIds", [RemapIds()]), ("BuildSequences", [BuildSequences(shard=s) for s in shards]),
                         ("WriteTFRecords", [WriteTFRecords(shard=s) for s in shards]), ("Preprocess", [Preprocess()])):
        start = time.perf_counter()
        if not luigi.build(tasks, local_scheduler=True, log_level="WARNING"):
            raise SystemExit(f"{stage} failed")
        seconds[stage] = round(time.perf_counter() - start, 1)
        # Each stage's cluster is closed (its workers reaped) by now, so their peaks count.
        measured = {"seconds": seconds, "total_s": round(sum(seconds.values()), 1),
                    "peak_rss_mb": {"luigi_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                                    "largest_child": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024}}
        with open(args.data_dir / "benchmark-progress.jsonl", "a") as progress:  # survives a run cut short
            progress.write(json.dumps({"engine": args.run_one, "scale": args.scale, **measured}) + "\n")
        if stage == args.until:
            break
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--engines", default="dask,local")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="8GB")
    parser.add_argument("--num-shards", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--until", default="Preprocess", choices=("RemapIds", "BuildSequences", "WriteTFRecords",
                                                                  "Preprocess"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        print(json.dumps(run_one(args)))
        return
    raw = ensure_raw(args.data_dir, args.scale, args.seed)
    previous = None
    for engine in args.engines.split(","):
        for name in STAGE_DIRS:
            shutil.rmtree(args.data_dir / name, ignore_errors=True)
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--run-one", engine],
                               capture_output=True, text=True)
        if child.returncode:
            print(json.dumps({"engine": engine, "scale": args.scale, "failed": child.stderr[-2000:]}), flush=True)
            continue
        digest, size = outputs_digest(args.data_dir)
        print(json.dumps({"engine": engine, "scale": args.scale, **json.loads(child.stdout.splitlines()[-1]),
                          "workers": args.workers if engine == "dask" else None,
                          "memory_limit": args.memory_limit if engine == "dask" else None,
                          "num_shards": args.num_shards, "until": args.until, "output_bytes": size, "outputs_sha256": digest,
                          "same_as_previous_engine": None if previous is None else digest == previous,
                          "cpu": cpu_model(), "raw": raw}), flush=True)
        previous = digest
    if not args.keep:
        for name in STAGE_DIRS:
            shutil.rmtree(args.data_dir / name, ignore_errors=True)


if __name__ == "__main__":
    main()
