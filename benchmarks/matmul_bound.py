"""How fast could the reference DIN preset train on this CPU if only its matrix products cost time?

    python benchmarks/matmul_bound.py [--batch 4096] [--mean-history 6.1]

Times, with TensorFlow on this machine, every matrix product of one training step of
the reference preset (attention MLP 32-80-40-1 over the real history entries, output
MLP 16-256-128-64-1; forward, and the two products per layer of the backward pass)
and prints one JSON line: milliseconds per step spent in matmuls alone and the
samples/s ceiling that implies. Compare with `benchmarks/train.py --preset reference`.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402


def matmul_ms(rows: int, inner: int, cols: int, repeats: int = 30) -> float:
    left, right = tf.random.normal([rows, inner]), tf.random.normal([inner, cols])
    product = tf.function(tf.linalg.matmul)
    product(left, right)
    started = time.perf_counter()
    for _ in range(repeats):
        result = product(left, right)
    result.numpy()
    return (time.perf_counter() - started) / repeats * 1000


def layer_ms(rows: int, widths: list[int]) -> float:
    """Forward (x W) plus backward (dY W^T and X^T dY) products of a stack of dense layers."""
    total = 0.0
    for inner, cols in zip(widths[:-1], widths[1:]):
        total += matmul_ms(rows, inner, cols) + matmul_ms(rows, cols, inner) + matmul_ms(inner, rows, cols)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--mean-history", type=float, default=6.1,
                        help="mean real history entries per sample (maxlen 20) in the benchmark data")
    args = parser.parse_args()
    entries = int(args.batch * args.mean_history)
    attention = layer_ms(entries, [32, 80, 40, 1])
    mlp = layer_ms(args.batch, [16, 256, 128, 64, 1])
    step = attention + mlp
    print(json.dumps({"batch": args.batch, "history_entries": entries, "attention_matmul_ms": round(attention, 2),
                      "mlp_matmul_ms": round(mlp, 2), "step_matmul_ms": round(step, 2),
                      "ceiling_samples_per_s": round(args.batch / step * 1000)}))


if __name__ == "__main__":
    main()
