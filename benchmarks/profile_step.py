"""Where the time of one DIN training step goes, by TensorFlow op type; prints one JSON line.

    python benchmarks/profile_step.py --data-dir DIR [--preset reference|default] [--steps 8]
        [--history-layout dense|compact|static_compact] [--jit]

Preloads `--steps` train batches (so no input pipeline runs), warms the step up, times
it, then traces the same steps with the TensorFlow profiler and sums the time each op
type spent on the compute threads. `op_thread_ms_per_step` adds up over threads, so
with 2 cores it can reach twice `step_ms`; `matmul_share` is the part of it spent in
matrix products (MatMul, _FusedMatMul, BatchMatMul).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe  # noqa: E402
from benchmarks.train import PRESETS, fresh_train_step, preset_setup  # noqa: E402
from din_model.params import HISTORY_LAYOUTS  # noqa: E402

MATMUL_OPS = ("MatMul", "_FusedMatMul", "BatchMatMulV2", "BatchMatMulV3",  # and their oneDNN versions:
              "_MklMatMul", "_MklFusedMatMul", "_MklBatchMatMulV2", "_MklNativeMatMul", "_MklNativeFusedMatMul")


def op_thread_ms(trace_dir: Path, steps: int) -> collections.Counter:
    """Milliseconds per step by op type on the executor's compute threads, from the profiler's XSpace."""
    try:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    except ImportError:  # TensorFlow 2.6 (the Ascend stack) keeps it under tensorflow.core
        from tensorflow.core.profiler.protobuf import xplane_pb2

    totals = collections.Counter()
    for path in trace_dir.rglob("*.xplane.pb"):
        space = xplane_pb2.XSpace()
        space.ParseFromString(path.read_bytes())
        for plane in space.planes:
            for line in plane.lines:
                if not line.name.startswith("tf_Compute"):
                    continue
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name
                    if ":" in name and "::" not in name:  # "scope/op_name:OpType"; not executor bookkeeping
                        totals[name.rsplit(":", 1)[1]] += event.duration_ps / 1e9 / steps
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="reference")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--history-layout", choices=HISTORY_LAYOUTS, default="auto")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the step (fixed-size batches)")
    args = parser.parse_args()

    import tensorflow as tf

    from din_model.model.network import resolve_history_layout
    from din_model.data.reader import make_dataset

    params, spec, device = preset_setup(args.data_dir, args.preset, device=args.device, precision=args.precision,
                                        history_layout=args.history_layout, jit_compile=args.jit)
    device.static_shapes = device.static_shapes or args.jit  # as benchmarks/train.py does for XLA
    dataset = make_dataset(spec, "train", params.batch_size, shuffle=True, seed=1, repeat=True, drop_remainder=True,
                           maxlen=params.maxlen, history_fields=params.history_features)
    batches = [batch for _, batch in zip(range(args.steps), dataset)]
    with device.scope():
        train_step = fresh_train_step(params, spec, device)
        for features, labels in batches:
            float(train_step(features, labels))
        step_seconds = []
        for features, labels in batches * 3:
            started = time.perf_counter()
            float(train_step(features, labels))
            step_seconds.append(time.perf_counter() - started)
        with tempfile.TemporaryDirectory() as trace_dir:
            tf.profiler.experimental.start(trace_dir)
            for features, labels in batches:
                float(train_step(features, labels))
            tf.profiler.experimental.stop()
            by_type = op_thread_ms(Path(trace_dir), len(batches))
    total = sum(by_type.values())
    matmul = sum(by_type[name] for name in MATMUL_OPS)
    step_ms = statistics.median(step_seconds) * 1000
    print(json.dumps({"preset": args.preset, **device.describe(), "batch_size": params.batch_size,
                      "history_layout": resolve_history_layout(params, device.static_shapes), "jit_compile": args.jit,
                      "step_ms": round(step_ms, 1), "samples_per_s": round(params.batch_size / step_ms * 1000),
                      "op_thread_ms_per_step": round(total, 1), "matmul_thread_ms_per_step": round(matmul, 1),
                      "matmul_share": round(matmul / total, 3),
                      "top_op_types_ms": {name: round(ms, 2) for name, ms in by_type.most_common(15)},
                      "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "machine": describe()}))


if __name__ == "__main__":
    main()
