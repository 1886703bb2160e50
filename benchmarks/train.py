"""Throughput of DIN training on the TFRecord shards; prints one JSON line.

    python benchmarks/train.py --data-dir DIR [--preset reference|default] [--steps N] [--xla auto|on|off]

Measures, after `--warmup` steps: `train_samples_per_s` (input pipeline + train step,
steady state; median of 5 windows, plus the best window), `first_call_s` (the first call:
tracing and compiling the step, plus its steps) and `input_samples_per_s`
(the tf.data reader alone), then (`--baseline`, in a process of its own) the
reference setup's in-memory Keras `fit` (benchmarks/reference_din.py, same windows) and our
speed-up over it; benchmarks/vs_reference.py alternates the two over several pairs. Preset
`reference` is the reference DIN TF2 model function: history cut to the last 20 entries,
embedding 8, item id only, attention MLP 80-40 sigmoid with softmax, BatchNormalization
of the output MLP's input, output MLP 256-128-64 PReLU, one dropout 0.5 after it, L2 1e-4
on the item table, Adam 1e-3, batch 4096. `--generate-samples N` first
writes a random data dir (fixture writer, maxlen 40, geometric histories of mean 6,
63001 items, 801 categories) when DIR has no feature_spec.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# din_model sets TensorFlow's environment (log level, oneDNN kernels) before TensorFlow
# loads; the baseline's process inherits it, so both sides run the same kernels.
import din_model  # noqa: E402,F401
from benchmarks.machine import describe  # noqa: E402
from din_model.params import HISTORY_LAYOUTS, MODELS, XLA_MODES  # noqa: E402
from din_model.train.policies import resolve_xla  # noqa: E402
from din_model.train.steps import STEPS_PER_CALL, make_step_loop  # noqa: E402

PRESETS = {
    "reference": dict(batch_size=4096, embed_dim=8, use_category=False, attention_hidden="80,40",
                      attention_activation="sigmoid", attention_softmax=True, mlp_input_batch_norm=True,
                      mlp_hidden="256,128,64", activation="prelu", dropout=0.5, dropout_last_only=True,
                      learning_rate=1e-3, maxlen=20, l2=1e-4, mini_batch_aware_l2=False, l2_weights="embeddings",
                      model="din"),
    "default": dict(),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="reference")
    parser.add_argument("--steps", type=int, default=80, help="timed steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--xla", choices=XLA_MODES, default="auto",
                        help="XLA-compile the train step: as [train] xla (auto: what training does on this machine)")
    parser.add_argument("--jit", action="store_true", help="the same as --xla on")
    parser.add_argument("--steps-per-call", type=int, default=None,
                        help=f"train steps per call, as training runs them (default {STEPS_PER_CALL}; 1: a Python "
                             "call per step)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="mixed")
    parser.add_argument("--history-layout", choices=HISTORY_LAYOUTS, default="auto",
                        help="dense: score every padded position; compact: the real entries (dynamic shapes); "
                             "static_compact: the real entries in a fixed-capacity buffer (NPU/XLA); "
                             "auto: what training picks")
    parser.add_argument("--static-shapes", action="store_true",
                        help="fixed-size batches as on the NPU (the layout auto picks then is static_compact)")
    parser.add_argument("--model", choices=MODELS, default=None, help="default: the preset's")
    parser.add_argument("--sequence-features", default=None, help="din_seq's order-aware inputs, e.g. recency,last_item")
    parser.add_argument("--generate-samples", type=int, default=0)
    parser.add_argument("--cold", action="store_true",
                        help="evict the shards from the page cache first (posix_fadvise DONTNEED), as when the "
                             "data set is larger than memory")
    parser.add_argument("--input-only", action="store_true", help="measure the input pipeline alone")
    parser.add_argument("--baseline", action="store_true",
                        help="also time the reference Keras fit (benchmarks/reference_din.py) over the same windows")
    return parser.parse_args(argv)


def generate_data(data_dir: Path, samples: int) -> None:
    from tests.helpers.din_fixtures import write_random_fixture

    held_out = max(1000, samples // 20)
    write_random_fixture(data_dir, sizes=(("train", samples), ("val", held_out), ("test", held_out)), maxlen=40,
                         prebatch=1024, num_shards=8, n_items=63001, n_cats=801, n_users=192403, mean_history=6.0)


def preset_setup(data_dir: Path, preset: str, **settings):
    """(params, spec, device) of `preset` on DIR's shards; `settings` replace [train] values."""
    from din_model.device.selection import select_device
    from din_model.params import TrainParams
    from din_common.feature_spec import FeatureSpec

    params = TrainParams(**{**PRESETS[preset], **settings})
    spec = FeatureSpec.read(data_dir / "tfrecords" / "feature_spec.json")
    return params, spec, select_device(params.device, params.precision)


def fresh_train_step(params, spec, device):
    """A new model and optimizer and their compiled train step, as training builds them (under device.scope())."""
    from din_model.train.state import TrainingState
    from din_model.train.steps import make_train_step, step_signature

    state = TrainingState(params, spec, device, Path("/nonexistent-checkpoints"))
    return make_train_step(state.model, state.optimizer, params.jit_compile, step_signature(spec, params, device))


def window_rates(iterator, steps: int, warmup: int, consume, windows: int = 5) -> list[float]:
    """Samples per second in `windows` consecutive windows of `steps // windows` elements, after warm-up.

    Several windows, because a shared machine makes single timings noisy: the median is
    the figure to quote, the best shows what the code does without interference.
    """
    for _ in range(warmup):
        consume(next(iterator))
    rates = []
    for _ in range(windows):
        samples, started = 0, time.perf_counter()
        for _ in range(max(1, steps // windows)):
            samples += consume(next(iterator))
        rates.append(samples / (time.perf_counter() - started))
    return rates


def timed_first(consume, record: dict):
    """`consume`, recording in `record["seconds"]` how long its first call took (tracing and compiling
    the step, XLA's compile included, plus that call's steps)."""
    def timed(element):
        started = time.perf_counter()
        result = consume(element)
        record.setdefault("seconds", time.perf_counter() - started)
        return result

    return timed


def evict_from_page_cache(paths) -> None:
    """Ask the kernel to drop these files' cached pages (works without root, unlike drop_caches)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def reference_fit_in_own_process(data_dir: Path, steps: int, warmup: int) -> float:
    """The baseline over the same windows, measured in a fresh process of its own."""
    finished = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reference_din.py"), "--data-dir",
                               str(data_dir), "--steps", str(steps), "--warmup", str(warmup)],
                              capture_output=True, text=True, check=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])["reference_keras_fit_samples_per_s"]


def main(argv=None) -> None:
    args = parse_args(argv)
    # Windows of whole calls, as many steps as the baseline's windows (steps // 5 batches)
    args.steps_per_call = math.gcd(max(1, args.steps // 5), args.steps_per_call or STEPS_PER_CALL)
    spec_path = args.data_dir / "tfrecords" / "feature_spec.json"
    if not spec_path.is_file() and args.generate_samples:
        generate_data(args.data_dir, args.generate_samples)

    from din_model.model.network import resolve_history_layout
    from din_model.data.reader import make_dataset

    settings = {"device": args.device, "precision": args.precision, "xla": "on" if args.jit else args.xla,
                "history_layout": args.history_layout}
    for name in ("batch_size", "model", "sequence_features"):
        if getattr(args, name):
            settings[name] = getattr(args, name)
    params, spec, device = preset_setup(args.data_dir, args.preset, **settings)
    # XLA gets fixed-size batches too: the static layout's shapes must be known when the step
    # is traced (din_model/model/segments.py `dimension`); the timed batches are all full anyway.
    params = resolve_xla(params, device, spec)
    device.static_shapes = device.static_shapes or args.static_shapes or params.jit_compile

    def dataset():
        return make_dataset(spec, "train", params.batch_size, shuffle=True, seed=params.seed, repeat=True,
                            drop_remainder=True, maxlen=params.maxlen, history_fields=params.history_features)

    if args.cold:
        from din_model.data.reader import split_files
        evict_from_page_cache(split_files(spec, "train"))
    input_rates = window_rates(iter(dataset()), args.steps * 2, args.warmup, lambda batch: int(batch[1].shape[0]))
    if args.input_only:
        print(json.dumps({"input_samples_per_s": round(statistics.median(input_rates)), "cold_cache": args.cold,
                          "preset": args.preset, "batch_size": params.batch_size, "steps": args.steps * 2}))
        return
    first_call = {}
    with device.scope():
        train_step = fresh_train_step(params, spec, device)
        if args.steps_per_call == 1:
            def consume(batch):
                features, labels = batch
                float(train_step(features, labels))
                return int(labels.shape[0])

            train_rates = window_rates(iter(dataset()), args.steps, args.warmup, timed_first(consume, first_call))
        else:  # as training runs them (din_model/parallel/placement.py epoch_steps)
            run_steps = make_step_loop(train_step, args.steps_per_call)

            def consume(batches):
                losses, samples = run_steps(batches)
                float(losses[-1])
                return int(samples)

            train_rates = window_rates(itertools.repeat(iter(dataset())), args.steps // args.steps_per_call,
                                       max(1, round(args.warmup / args.steps_per_call)),
                                       timed_first(consume, first_call))
    baseline = {}
    if args.baseline:
        reference_rate = reference_fit_in_own_process(args.data_dir, args.steps, args.warmup)
        baseline = {"reference_keras_fit_samples_per_s": round(reference_rate),
                    "speedup_vs_reference_fit": round(statistics.median(train_rates) / reference_rate, 2)}
    print(json.dumps({"train_samples_per_s": round(statistics.median(train_rates)),
                      "train_samples_per_s_best_window": round(max(train_rates)),
                      "first_call_s": round(first_call["seconds"], 2),
                      "input_samples_per_s": round(statistics.median(input_rates)),
                      **device.describe(), "preset": args.preset, "batch_size": params.batch_size,
                      "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "jit_compile": params.jit_compile,
                      "history_layout": resolve_history_layout(params, device.static_shapes),
                      "model": params.model, "sequence_features": list(params.active_sequence_features),
                      "steps": args.steps, "steps_per_call": args.steps_per_call, **baseline,
                      "machine": describe()}))


if __name__ == "__main__":
    main()
