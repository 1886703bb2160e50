"""Device and precision selection: Ascend NPU, else GPU, else CPU.

`select_device(requested, precision)` returns a `DeviceChoice` saying which device
trains, the precision actually used, the Keras dtype policy of the model, whether
batches need static shapes, and a `scope()` to build and run the model in.

- NPU (the CANN TF2 adapter, `import npu_device`): precision_mode
  `allow_mix_precision` (mixed) or `must_keep_origin_dtype` (fp32) is set on
  `npu_device.global_options()` before `npu_device.open().as_default()`. Batches are
  fixed-size (drop_remainder) because the NPU compiles one graph per shape.
- GPU: the Keras `mixed_float16` policy (+ loss scaling in training) for mixed.
- CPU: always float32; the recorded precision is "fp32" whatever was asked.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
from typing import Any, Callable

import tensorflow as tf

from din_common.errors import InputError

NPU_PRECISION_MODES = {"mixed": "allow_mix_precision", "fp32": "must_keep_origin_dtype"}
DEVICES = ("auto", "npu", "gpu", "cpu")
PRECISIONS = ("mixed", "fp32")


@dataclasses.dataclass
class DeviceChoice:
    name: str                 # "npu", "gpu" or "cpu"
    precision: str            # precision actually used: "mixed" or "fp32"
    dtype_policy: str         # Keras dtype policy of the model's layers
    static_shapes: bool       # batches must all have the same shape (drop_remainder)
    loss_scaling: bool        # wrap the optimizer in a LossScaleOptimizer
    tf_device: str | None = None
    handle: Any = None        # the opened NPU device, kept alive for the run

    def scope(self):
        return tf.device(self.tf_device) if self.tf_device else contextlib.nullcontext()

    def describe(self) -> dict[str, str]:
        return {"device": self.name, "precision": self.precision}


def _import_npu_device():
    try:
        return importlib.import_module("npu_device")
    except ImportError:
        return None


def _gpu_present() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def _absent(device: str, what: str) -> InputError:
    return InputError(f"[train] device = {device}, but {what}; set [train] device = auto "
                      "(or --train-device auto) to use the best device present")


def _open_npu(npu_module, precision: str) -> DeviceChoice:
    npu_module.global_options().precision_mode = NPU_PRECISION_MODES[precision]
    handle = npu_module.open()
    handle.as_default()
    return DeviceChoice(name="npu", precision=precision, dtype_policy="float32", static_shapes=True,
                        loss_scaling=False, handle=handle)


def _use_gpu(precision: str) -> DeviceChoice:
    mixed = precision == "mixed"
    return DeviceChoice(name="gpu", precision=precision, dtype_policy="mixed_float16" if mixed else "float32",
                        static_shapes=False, loss_scaling=mixed, tf_device="/GPU:0")


def _use_cpu() -> DeviceChoice:
    return DeviceChoice(name="cpu", precision="fp32", dtype_policy="float32", static_shapes=False,
                        loss_scaling=False, tf_device="/CPU:0")


def select_device(requested: str = "auto", precision: str = "mixed", *,
                  import_npu: Callable[[], Any] = _import_npu_device,
                  gpu_present: Callable[[], bool] = _gpu_present) -> DeviceChoice:
    """The device to train on; an explicitly requested device that is absent is an InputError.

    On the NPU the adapter keeps precision_mode for mixed precision, so the model stays
    float32 in Keras and the NPU casts where it is safe.
    """
    if requested not in DEVICES:
        raise InputError(f"[train] device must be one of {DEVICES}, got {requested!r}")
    if precision not in PRECISIONS:
        raise InputError(f"[train] precision must be one of {PRECISIONS}, got {precision!r}")
    if requested in ("auto", "npu"):
        npu_module = import_npu()
        if npu_module is not None:
            return _open_npu(npu_module, precision)
        if requested == "npu":
            raise _absent("npu", "the Ascend CANN TF adapter (npu_device) is not importable: install the "
                                 "CANN toolkit and its TensorFlow adapter and source set_env.sh")
    if requested in ("auto", "gpu"):
        if gpu_present():
            return _use_gpu(precision)
        if requested == "gpu":
            raise _absent("gpu", "TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty)")
    return _use_cpu()
