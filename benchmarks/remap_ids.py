"""Time `remap_ids` on a data dir's raw pickles, optionally against another checkout's, alternating.

    python benchmarks/remap_ids.py --data-dir DIR [--base CHECKOUT] [--repeats 4]

Loads DIR/raw/reviews.pkl and meta.pkl as RemapIds does (in the pickle sandbox, not timed),
then times this checkout's `pipeline.remap.remap_ids` and, with --base, the one in
CHECKOUT/pipeline/remap.py, alternating in one process (same-run figures on a shared
machine), asserting both give identical tables and stats. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.raw_sources import load_raw_pickles  # noqa: E402
from pipeline.remap import remap_ids  # noqa: E402

TABLES = ("items", "categories", "users", "reviews")


def base_remap(checkout: Path):
    spec = importlib.util.spec_from_file_location("base_remap", checkout / "pipeline" / "remap.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["base_remap"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module.remap_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--base", type=Path, help="a checkout whose pipeline/remap.py to compare against")
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    (reviews, _), (meta, _) = load_raw_pickles(args.data_dir / "raw" / "reviews.pkl", args.data_dir / "raw" / "meta.pkl")
    versions = {"this": remap_ids, **({"base": base_remap(args.base)} if args.base else {})}
    seconds = {name: [] for name in versions}
    for _ in range(args.repeats):
        results = {}
        for name, remap in versions.items():
            start = time.perf_counter()
            results[name] = remap(reviews, meta)
            seconds[name].append(round(time.perf_counter() - start, 3))
        if "base" in results:
            this, base = results["this"], results["base"]
            assert all(getattr(this, t).equals(getattr(base, t)) for t in TABLES) and this.stats == base.stats
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    print(json.dumps({"benchmark": "remap_ids", "reviews": len(reviews), "seconds": seconds, "median_s": medians,
                      **({"median_ratio_this_to_base": round(medians["this"] / medians["base"], 3)} if args.base else {})}))


if __name__ == "__main__":
    main()
