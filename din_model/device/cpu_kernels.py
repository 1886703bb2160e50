"""Which CPU kernels TensorFlow runs: oneDNN only where it was measured to help and is known to be safe.

TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` once, when it is first imported, so the choice is made before that
from facts that need no TensorFlow: the machine, the CPU's feature flags (`/proc/cpuinfo`) and the installed
TensorFlow's version (package metadata). `choose_onednn` is the pure rule; `apply` sets the variable and
records why in `CHOICE`, which `metrics.json` reports (`cpu_kernels`).

The rule (docs/performance.md has the measurements):
- a user's own `TF_ENABLE_ONEDNN_OPTS` always wins;
- on x86-64 with AVX-512 and TensorFlow >= 2.9 oneDNN is turned on: it was measured faster there;
- everywhere else TensorFlow keeps its own default. TensorFlow 2.6.5 (the Ascend stack) with oneDNN on dies
  with SIGFPE in its first matrix product on CPUs without AVX-512 (oneDNN's AVX2 gemm thread partition divides
  by zero), and TensorFlow made oneDNN its default only from 2.9 on, so older versions are never switched on;
  on CPUs without AVX-512 it was not measured to help.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import platform
import re

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
X86_MACHINES = ("x86_64", "amd64")
FIRST_SAFE_TENSORFLOW = (2, 9)
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tf-nightly", "tf-nightly-cpu")

CHOICE = "not decided"  # set by `apply`: what was chosen and why, for metrics.json


def cpu_flags(cpuinfo_path: str = "/proc/cpuinfo") -> frozenset:
    """The CPU's feature flags as the kernel lists them (empty where there is no /proc/cpuinfo)."""
    try:
        with open(cpuinfo_path, encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _parse_version(text: str):
    numbers = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(numbers.group(1)), int(numbers.group(2))) if numbers else None


def tensorflow_version():
    """(major, minor) of the installed TensorFlow without importing it; None when none is found."""
    try:
        from importlib import metadata
    except ImportError:  # Python 3.7: read the dist-info folder beside the package
        metadata = None
    if metadata is not None:
        for distribution in TENSORFLOW_DISTRIBUTIONS:
            try:
                return _parse_version(metadata.version(distribution))
            except metadata.PackageNotFoundError:
                continue
        return None
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        return None
    site = os.path.dirname(list(spec.submodule_search_locations)[0])
    for name in TENSORFLOW_DISTRIBUTIONS:
        for info in glob.glob(os.path.join(site, name.replace("-", "_") + "-*.dist-info")):
            return _parse_version(os.path.basename(info).split("-")[1])
    return None


def choose_onednn(user_setting, machine: str, flags: frozenset, tf_version):
    """(value for TF_ENABLE_ONEDNN_OPTS or None to leave TensorFlow's default, the reason in words)."""
    if user_setting is not None:
        return user_setting, f"oneDNN {user_setting} (set by the user)"
    if machine.lower() not in X86_MACHINES:
        return None, f"TensorFlow's default ({machine})"
    if tf_version is None or tf_version < FIRST_SAFE_TENSORFLOW:
        shown = "unknown" if tf_version is None else "%d.%d" % tf_version
        return None, f"TensorFlow's default (TensorFlow {shown} < 2.9: oneDNN is not switched on)"
    if "avx512f" not in flags:
        return None, "TensorFlow's default (no AVX-512: oneDNN not measured to help)"
    return "1", "oneDNN on (x86-64 with AVX-512, TensorFlow >= 2.9)"


def apply(environ=os.environ) -> str:
    """Set TF_ENABLE_ONEDNN_OPTS by the rule above (before TensorFlow is imported); returns the reason."""
    global CHOICE
    value, CHOICE = choose_onednn(environ.get(ONEDNN_VARIABLE), platform.machine(), cpu_flags(),
                                  tensorflow_version())
    if value is not None:
        environ[ONEDNN_VARIABLE] = value
    return CHOICE
