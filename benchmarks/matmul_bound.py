"""How fast could the reference DIN preset train on this CPU if only its matrix products cost time?

    python benchmarks/matmul_bound.py [--batch 4096] [--mean-history 6.1] [--repeats 20]

Builds one TensorFlow graph holding every matrix product of one training step of the
reference preset (attention MLP 32-80-40-1 over the real history entries, output MLP
16-256-128-64-1; per layer the forward product and the two of the backward pass),
runs it `--repeats` times and prints one JSON line: milliseconds per step spent in
matmuls alone and the samples/s ceiling that implies. The products run in one graph,
as in a real step, so TensorFlow's executor spreads them over the cores the same way.
Compare with `benchmarks/train.py --preset reference` and `benchmarks/profile_step.py`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import din_model  # noqa: E402,F401  (TensorFlow's environment as in training: log level, oneDNN)
import tensorflow as tf  # noqa: E402


def dense_stack_products(rows: int, widths: list[int]) -> list[tuple[int, int, int]]:
    """(m, k, n) of x W, dY W^T and X^T dY for each layer of a dense stack applied to `rows` rows."""
    products = []
    for inner, cols in zip(widths[:-1], widths[1:]):
        products += [(rows, inner, cols), (rows, cols, inner), (inner, rows, cols)]
    return products


def step_matmul_ms(products: list[tuple[int, int, int]], repeats: int) -> float:
    operands = [(tf.random.normal([m, k]), tf.random.normal([k, n])) for m, k, n in products]

    @tf.function
    def all_products(operands):
        # One element of each product leaves the graph, so no output copy is timed.
        return tf.add_n([tf.linalg.matmul(left, right)[0, 0] for left, right in operands])

    all_products(operands).numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        all_products(operands).numpy()
    return (time.perf_counter() - started) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--mean-history", type=float, default=6.1,
                        help="mean real history entries per sample (maxlen 20) in the benchmark data")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    entries = int(args.batch * args.mean_history)
    attention = dense_stack_products(entries, [32, 80, 40, 1])
    mlp = dense_stack_products(args.batch, [16, 256, 128, 64, 1])
    gflop = 2 * sum(m * k * n for m, k, n in attention + mlp) / 1e9
    step = step_matmul_ms(attention + mlp, args.repeats)
    print(json.dumps({"batch": args.batch, "history_entries": entries,
                      "attention_matmul_ms": round(step_matmul_ms(attention, args.repeats), 2),
                      "mlp_matmul_ms": round(step_matmul_ms(mlp, args.repeats), 2), "step_matmul_ms": round(step, 2),
                      "step_gflop": round(gflop, 3), "gflop_per_s": round(gflop / step * 1000, 1),
                      "ceiling_samples_per_s": round(args.batch / step * 1000)}))


if __name__ == "__main__":
    main()
