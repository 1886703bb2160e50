"""The machine a benchmark ran on, for its JSON line: `describe()`.

Figures differ by CPU kind (AVX-512 or not, core count), so every benchmark reports
the CPU model, its vector features that matter to our kernels, and the cores.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

# The /proc/cpuinfo flags that decide which kernels run fast (oneDNN, XLA, numpy/arrow SIMD).
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                "amx_tile", "amx_bf16", "amx_int8")


def _cpuinfo() -> dict[str, str]:
    """The first processor's `key: value` lines of /proc/cpuinfo ({} where there is none)."""
    fields = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def describe() -> dict:
    """CPU model, architecture, logical CPUs and which of VECTOR_FLAGS the CPU has."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return {
        "cpu_model": info.get("model name") or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "cpu_features": [flag for flag in VECTOR_FLAGS if flag in flags],
        "avx512": "avx512f" in flags,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(describe()))
