"""Throughput of the allow-list unpickler on dense opcodes, and how much data pickles gzip.

The figures behind the pickle sandbox's limits (pipeline/untrusted/sandbox.py, docs/security.md "Limits"):
`python benchmarks/unpickler_rate.py data/raw/reviews.pkl data/raw/meta.pkl`.
"""
import gzip
import io
import pickle
import sys
import time
from pathlib import Path

from pipeline.untrusted.unpickler import safe_load

dense = pickle.dumps([[i, str(i)] for i in range(1_000_000)], protocol=4)
start = time.perf_counter()
try:
    safe_load(io.BytesIO(dense), name="dense.pkl")
except Exception as error:
    print("refused:", str(error)[:80])
seconds = time.perf_counter() - start
print(f"dense opcodes: {len(dense) / 1e6:.1f} MB in {seconds:.2f} s = {len(dense) / 1e6 / seconds:.0f} MB/s")
for path in sys.argv[1:]:
    data = Path(path).read_bytes()
    print(f"{path}: {len(data) / 1e6:.1f} MB, gzip ratio {len(data) / len(gzip.compress(data, 6)):.1f}x")
