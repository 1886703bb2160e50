"""Choices made once the device and the data are known: XLA or not, fixed-size batches or not.

- `resolve_xla`: `[train] xla` ("auto", "on", "off") turned into `TrainParams.jit_compile`.
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
    """`params` with `jit_compile` set from `[train] xla`: "on", "off", or "auto": on for one process on a
    CPU whose kind and TensorFlow XLA was measured to speed up (`cpu_kernels.XLA_ON_CPU`: AVX-512 and
    TensorFlow >= 2.16) when the run trains at least XLA_MIN_STEPS full batches, off elsewhere
    (clusters of workers were not measured with it).

    Where XLA pays off, and where it does not (TF 2.6's XLA, CPUs without AVX-512, GPUs not measured), is
    measured in docs/static_path.md and docs/performance.md. XLA steps take fixed-size batches, so an
    epoch leaves out its last partial batch (a different one each epoch, as the data is reshuffled).
    """
    if params.xla == "on" and device.name == "npu":
        raise InputError("[train] xla = on: the NPU compiles its graphs itself; set [train] xla = auto or off")
    if params.xla != "auto":
        return dataclasses.replace(params, jit_compile=params.xla == "on")
    full_batches = spec.samples("train") // params.batch_size
    worth_compiling = full_batches * params.epochs >= XLA_MIN_STEPS
    return dataclasses.replace(params, jit_compile=device.name == "cpu" and cpu_kernels.XLA_ON_CPU and worth_compiling
                               and one_process)


def fixed_batches(params: TrainParams, device: DeviceChoice) -> bool:
    """Every batch has exactly batch_size rows: the NPU compiles one graph per shape, and XLA needs the
    batch size when it traces the step (so the last, smaller batch of an epoch is dropped)."""
    return device.static_shapes or params.jit_compile
