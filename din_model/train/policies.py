"""Choices made once the device and the data are known: XLA or not, fixed-size batches or not.

- `resolve_xla`: `[train] xla` ("auto", "on", "off", "head") turned into `TrainParams.jit_compile` / `jit_head`;
  `xla_label` says which in the progress line.
- `fixed_batches`: whether every batch must have exactly batch_size rows.
"""
from __future__ import annotations

import dataclasses

from din_common.errors import InputError
from din_common.feature_spec import FeatureSpec
from din_model.device import cpu_kernels
from din_model.device.selection import DeviceChoice
from din_model.params import TrainParams

# Runs of at least this many full batches repay XLA's longer compile (docs/static_path.md, "[train] xla",
# with the measurement); `auto` asks for 1.5x the break-even point.
XLA_MIN_STEPS = 512


def resolve_xla(params: TrainParams, device: DeviceChoice, spec: FeatureSpec, *, one_process: bool = True) -> TrainParams:
    """`params` with `jit_compile` (the whole step) and `jit_head` (the output MLP only) set from `[train] xla`:
    "on", "head", "off", or "auto": for one process on a CPU, what `cpu_kernels.XLA_AUTO` chose for its kind and
    TensorFlow (the whole step with AVX-512 and TensorFlow >= 2.16, the output MLP on x86-64 with TensorFlow
    < 2.16), when the run trains at least XLA_MIN_STEPS full batches; off elsewhere (clusters of workers
    were not measured with it) and for "head" with `deterministic` (XLA's random numbers for the dropout are
    not TensorFlow's op-deterministic ones).

    Where XLA pays off, and where it does not (TF 2.6's XLA, CPUs without AVX-512, GPUs not measured), is
    measured in docs/static_path.md and docs/performance.md. XLA steps take fixed-size batches, so an
    epoch leaves out its last partial batch (a different one each epoch, as the data is reshuffled).
    """
    if params.xla in ("on", "head") and device.name == "npu":
        raise InputError(f"[train] xla = {params.xla}: the NPU compiles its graphs itself; set [train] xla = auto or off")
    if params.xla != "auto":
        return dataclasses.replace(params, jit_compile=params.xla == "on", jit_head=params.xla == "head")
    full_batches = spec.samples("train") // params.batch_size
    worth_compiling = full_batches * params.epochs >= XLA_MIN_STEPS
    mode = cpu_kernels.XLA_AUTO if device.name == "cpu" and worth_compiling and one_process else "off"
    if mode == "head" and params.deterministic:
        mode = "off"
    return dataclasses.replace(params, jit_compile=mode == "on", jit_head=mode == "head")


def xla_label(params: TrainParams) -> str:
    """", xla" / ", xla head" / "" for the progress line."""
    return ", xla" if params.jit_compile else ", xla head" if params.jit_head else ""


def fixed_batches(params: TrainParams, device: DeviceChoice) -> bool:
    """Every batch has exactly batch_size rows: the NPU compiles one graph per shape, and XLA needs the
    batch size when it traces the step (so the last, smaller batch of an epoch is dropped)."""
    return device.static_shapes or params.jit_compile
