"""What runs a CPU train step fastest on this CPU, decided once at start-up: oneDNN kernels and XLA.

Both choices read facts that need no TensorFlow: the machine, the CPU's feature flags (`/proc/cpuinfo`) and
the installed TensorFlow's version (package metadata). TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` once, when it
is first imported, so that choice is applied before (`apply`); the XLA choice is read later by
`din_model.train.policies.resolve_xla` for `[train] xla = auto`. `choose_onednn` and `choose_xla` are the
pure rules; `apply` records what they chose and why in `CHOICE` and `CHOICES`, which `metrics.json` reports
(`cpu_kernels`, `cpu_choices`). docs/performance.md has the measurements per CPU kind and stack.

oneDNN (`choose_onednn`):
- a user's own `TF_ENABLE_ONEDNN_OPTS` wins, except `1` where it is known to crash (below);
- a value `apply` set in a parent process (marked in `DIN_ONEDNN_CHOSEN`) is not a user's: a child process,
  perhaps another stack's interpreter (TF 2.6.5 started from a TF 2.21 process), decides for its own TensorFlow;
- on x86-64 with TensorFlow >= 2.9 oneDNN is turned on: it was measured faster both with AVX-512 (Intel Xeon)
  and without (AMD EPYC, AVX2 only), where TensorFlow would leave it off;
- everywhere else TensorFlow keeps its own default. TensorFlow 2.6.5 (the Ascend stack) with oneDNN on dies
  with SIGFPE in its first train step on x86-64: measured on an AMD EPYC without AVX-512 and on one with
  AVX-512 (2 cores each), and TensorFlow made oneDNN its default only from 2.9 on, so older versions are never
  switched on; a user's `1` there is turned to `0` on x86-64 (with the reason in `cpu_kernels`), not left to
  crash.

XLA-compiled CPU steps for `xla = auto` (`choose_xla`):
- only with TensorFlow >= 2.16 (TF 2.6.5's XLA compiles the static history layout into code ~130x slower);
- only on x86-64 with AVX-512, where the XLA step was measured 1.3x the plain one; on a CPU without AVX-512
  (AMD EPYC, AVX2) the XLA step was measured slower than the plain one, so it stays off there.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import platform
import re

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
# The value `apply` put in ONEDNN_VARIABLE, so that child processes (which inherit both) can tell it from a user's.
CHOSEN_MARKER_VARIABLE = "DIN_ONEDNN_CHOSEN"
X86_MACHINES = ("x86_64", "amd64")
FIRST_SAFE_TENSORFLOW = (2, 9)
# The first TensorFlow whose XLA compiles our static-shape step into fast code (Keras 3's stack).
FIRST_FAST_XLA_TENSORFLOW = (2, 16)
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tf-nightly", "tf-nightly-cpu")

CHOICE = "not decided"  # set by `apply`: the oneDNN choice and why, for metrics.json (`cpu_kernels`)
CHOICES: dict = {}  # set by `apply`: every choice and the CPU facts behind them (`cpu_choices`)
XLA_ON_CPU = False  # set by `apply`: whether `[train] xla = auto` compiles a CPU step with XLA


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
    old_tensorflow = tf_version is None or tf_version < FIRST_SAFE_TENSORFLOW
    if user_setting is not None:
        # TensorFlow reads the variable as a boolean: "1" and "true" (any case) both switch oneDNN on. Overridden
        # only where the crash is known: a TensorFlow version found and older than 2.9, on x86-64 (with AVX-512
        # too: an AMD EPYC with AVX-512 died the same way, docs/performance.md).
        known_old = tf_version is not None and tf_version < FIRST_SAFE_TENSORFLOW
        if user_setting.strip().lower() in ("1", "true") and known_old and machine.lower() in X86_MACHINES:
            return "0", (f"oneDNN off (the user's TF_ENABLE_ONEDNN_OPTS={user_setting} overridden: "
                         "TensorFlow < 2.9 with oneDNN dies with SIGFPE on x86-64 CPUs, with or without AVX-512)")
        return user_setting, f"oneDNN {user_setting} (set by the user)"
    if machine.lower() not in X86_MACHINES:
        return None, f"TensorFlow's default ({machine})"
    if old_tensorflow:
        shown = "unknown" if tf_version is None else "%d.%d" % tf_version
        return None, f"TensorFlow's default (TensorFlow {shown} < 2.9: oneDNN is not switched on)"
    return "1", "oneDNN on (x86-64 %s AVX-512, TensorFlow >= 2.9)" % ("with" if "avx512f" in flags else "without")


def choose_xla(machine: str, flags: frozenset, tf_version):
    """(whether `xla = auto` XLA-compiles a CPU train step, the reason in words)."""
    if tf_version is None or tf_version < FIRST_FAST_XLA_TENSORFLOW:
        shown = "unknown" if tf_version is None else "%d.%d" % tf_version
        return False, f"XLA off (TensorFlow {shown} < 2.16: its XLA step is slower)"
    if machine.lower() not in X86_MACHINES or "avx512f" not in flags:
        return False, f"XLA off ({machine} without AVX-512: the XLA step was measured slower)"
    return True, "XLA on (x86-64 with AVX-512, TensorFlow >= 2.16)"


def apply(environ=os.environ, machine: str | None = None, flags: frozenset | None = None,
          tf_version=None) -> str:
    """Decide oneDNN (setting TF_ENABLE_ONEDNN_OPTS, before TensorFlow is imported) and XLA by the rules above,
    from this machine's facts or the ones given (tests force a CPU kind); returns the oneDNN reason."""
    global CHOICE, CHOICES, XLA_ON_CPU
    machine = platform.machine() if machine is None else machine
    flags = cpu_flags() if flags is None else flags
    tf_version = tensorflow_version() if tf_version is None else tf_version
    user_setting = environ.get(ONEDNN_VARIABLE)
    if user_setting is not None and environ.get(CHOSEN_MARKER_VARIABLE) == user_setting:
        user_setting = None  # inherited from a parent's `apply`, not the user's: decide for this TensorFlow
        del environ[ONEDNN_VARIABLE]
    environ.pop(CHOSEN_MARKER_VARIABLE, None)
    value, CHOICE = choose_onednn(user_setting, machine, flags, tf_version)
    if value is not None and value != user_setting:
        environ[ONEDNN_VARIABLE] = environ[CHOSEN_MARKER_VARIABLE] = value
    XLA_ON_CPU, xla_reason = choose_xla(machine, flags, tf_version)
    CHOICES = {"machine": machine, "avx512": "avx512f" in flags, "avx2": "avx2" in flags,
               "tensorflow": None if tf_version is None else "%d.%d" % tf_version,
               "onednn": CHOICE, "xla_auto": xla_reason}
    return CHOICE
