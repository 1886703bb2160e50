"""Device and precision selection: Ascend NPU, else GPU, else CPU; the NPU opened once per process.

`select_device(requested, precision)` returns a `DeviceChoice` saying which device
trains, the precision actually used, the Keras dtype policy of the model, whether
batches need static shapes, and a `scope()` to build and run the model in.

- NPU (the CANN TF2 adapter, `import npu_device`): every `[npu]` setting
  (`din_model.device.npu_options.NpuOptions`, given to `configure_npu` or as `npu_options=`) is set on
  `npu_device.global_options()` before `npu_device.open(device_id).as_default()`; `[train] precision`
  picks precision_mode when `[npu] precision_mode` is empty. The adapter reads options only when it
  opens the device, so the opened device is kept for the whole process: a later `select_device` with
  the same settings (EvaluateDIN after TrainDIN in one `luigi` run) reuses it, one with other settings
  is an InputError. Batches are fixed-size (drop_remainder) because the NPU compiles one graph per shape.
- GPU: the Keras `mixed_float16` policy (+ loss scaling in training) for mixed.
- CPU: always float32; the recorded precision is "fp32" whatever was asked.
`deterministic=True` (`[train] deterministic`) turns on TensorFlow's op determinism for the process
(din_model/compat.py) and, on the NPU, the adapter's `deterministic` option where the installed adapter
has it (tf_adapter_2.x configs/npu_config.py; an adapter without it gets a warning line, docs/ascend.md).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import threading
from typing import Any, Callable, Optional

import tensorflow as tf

from din_common.errors import InputError
from din_model import compat
from din_model.device.npu_options import NpuOptions, setting_of
from din_model.params import DEVICES, PRECISIONS


@dataclasses.dataclass
class DeviceChoice:
    name: str                 # "npu", "gpu" or "cpu"
    precision: str            # precision actually used: "mixed" or "fp32"
    dtype_policy: str         # Keras dtype policy of the model's layers
    static_shapes: bool       # batches must all have the same shape (drop_remainder)
    loss_scaling: bool        # wrap the optimizer in a loss-scale optimizer (`wrap_optimizer`)
    tf_device: str | None = None
    handle: Any = None        # the opened NPU device, kept alive for the run
    loss_scale_class: Any = None  # the wrapper: the adapter's NpuLossScaleOptimizer on the NPU, else Keras'
    iterations_per_loop: int = 1  # NPU: train steps per graph call ([npu] iterations_per_loop)
    set_loop_size: Optional[Callable[[int], None]] = None  # NPU: the adapter's set_npu_loop_size

    def wrap_optimizer(self, optimizer):
        """The optimizer as training uses it: wrapped for dynamic loss scaling when this device needs it."""
        if not self.loss_scaling:
            return optimizer
        if self.loss_scale_class is None:
            from din_model.compat import LossScaleOptimizer

            return LossScaleOptimizer(optimizer)
        return self.loss_scale_class(optimizer)

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


@dataclasses.dataclass
class _OpenedNpu:
    adapter: Any      # the `npu_device` module that opened the device
    device_id: int
    precision: str    # [train] precision it was opened for
    deterministic: bool  # [train] deterministic it was opened for
    settings: dict    # what was set on global_options()
    handle: Any


class _ProcessNpu:
    """This process's NPU state: the `[npu]` options configured for it and, once opened, the device."""

    def __init__(self):
        self.lock = threading.Lock()
        self.configured = NpuOptions()
        self.opened: Optional[_OpenedNpu] = None


_process_npu = _ProcessNpu()


def _flatten(settings: dict, prefix: str = "") -> dict:
    flat = {}
    for name, value in settings.items():
        flat.update(_flatten(value, f"{prefix}{name}.") if isinstance(value, dict) else {prefix + name: value})
    return flat


def _require_same_setup(opened: _OpenedNpu, device_id: int, settings: dict) -> None:
    """The open NPU can serve only a request that would set it up the same way."""
    if (settings, device_id) == (opened.settings, opened.device_id):
        return
    old, new = _flatten({"device_id": opened.device_id, **opened.settings}), _flatten({"device_id": device_id,
                                                                                       **settings})
    changes = "; ".join(f"{name}: open with {old.get(name)!r}, now asked for {new.get(name)!r}"
                        for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name))
    raise InputError(f"the NPU is already open in this process with other options ({changes}); the Ascend adapter "
                      "applies options only when it opens the device, so use the same [npu] and [train] precision "
                      "settings for every task of one run, or run the task in a new process")


def configure_npu(options: NpuOptions) -> None:
    """Make `options` the `[npu]` settings that `select_device` uses in this process (the Luigi tasks call it).

    Once the NPU is open, options that would set it up differently are an InputError at once.
    """
    with _process_npu.lock:
        opened = _process_npu.opened
        if opened is not None:
            _require_same_setup(opened, options.resolved_device_id(),
                                _npu_settings(opened.adapter, options, opened.precision, opened.deterministic))
        _process_npu.configured = options


def _set_options(config, settings: dict, prefix: str = "") -> None:
    """Set {option: value} (nested dicts for option groups) on the adapter's global_options()."""
    for name, value in settings.items():
        try:
            if isinstance(value, dict):
                _set_options(getattr(config, name), value, f"{prefix}{name}.")
            else:
                setattr(config, name, value)
        except (AttributeError, TypeError, ValueError) as error:  # the adapter's option setter raises all three
            raise InputError(f"[npu] {setting_of(prefix + name)}: the installed Ascend adapter rejects "
                             f"global_options().{prefix}{name} = {value!r} ({type(error).__name__}: {error}); check "
                             "the setting against its CANN version (docs/ascend.md)") from None


def _create_output_directories(options: NpuOptions) -> None:
    for name, path in options.output_directories().items():
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as error:
            raise InputError(f"[npu] {name} = {path!r}: cannot create the directory ({error})") from None


def _npu_settings(npu_module, options: NpuOptions, precision: str, deterministic: bool) -> dict:
    """What to set on the adapter's global_options(): the `[npu]` options, and `deterministic = 1` for a
    deterministic run when this adapter has the option."""
    settings = options.adapter_settings(precision)
    if deterministic and _adapter_has_option(npu_module, "deterministic"):
        settings["deterministic"] = 1
    return settings


def _adapter_has_option(npu_module, name: str) -> bool:
    try:
        getattr(npu_module.global_options(), name)
    except (AttributeError, ValueError):
        return False
    return True


def _open_npu(npu_module, precision: str, options: NpuOptions, deterministic: bool = False) -> DeviceChoice:
    settings, device_id = _npu_settings(npu_module, options, precision, deterministic), options.resolved_device_id()
    if deterministic and "deterministic" not in settings:
        print("WARNING: [train] deterministic: this Ascend adapter's global_options() has no deterministic option; "
              "TensorFlow's op determinism and the input order are fixed, the NPU's kernels may still vary "
              "(docs/ascend.md)", flush=True)
    with _process_npu.lock:
        opened = _process_npu.opened
        # A different module object only happens when tests swap stand-in adapters: a fresh adapter, fresh state.
        if opened is not None and opened.adapter is npu_module:
            _require_same_setup(opened, device_id, settings)
            handle = opened.handle
        else:
            _create_output_directories(options)
            _set_options(npu_module.global_options(), settings)
            handle = npu_module.open(device_id)
            handle.as_default()
            _process_npu.opened = _OpenedNpu(npu_module, device_id, precision, deterministic, settings, handle)
    # Mixed precision on the NPU happens inside the graph (precision_mode), so the model stays float32 and
    # the loss is scaled by the adapter's optimizer wrapper, dynamic as the adapter documents for it.
    return DeviceChoice(name="npu", precision=options.computes_in(precision), dtype_policy="float32",
                        static_shapes=True, loss_scaling=options.loss_scaled(precision), handle=handle,
                        loss_scale_class=npu_module.train.optimizer.NpuLossScaleOptimizer,
                        iterations_per_loop=options.iterations_per_loop, set_loop_size=npu_module.set_npu_loop_size)


def _use_gpu(precision: str) -> DeviceChoice:
    mixed = precision == "mixed"
    return DeviceChoice(name="gpu", precision=precision, dtype_policy="mixed_float16" if mixed else "float32",
                        static_shapes=False, loss_scaling=mixed, tf_device="/GPU:0")


def _use_cpu() -> DeviceChoice:
    return DeviceChoice(name="cpu", precision="fp32", dtype_policy="float32", static_shapes=False,
                        loss_scaling=False, tf_device="/CPU:0")


def select_device(requested: str = "auto", precision: str = "mixed", *, deterministic: bool = False,
                  npu_options: Optional[NpuOptions] = None,
                  import_npu: Callable[[], Any] = _import_npu_device,
                  gpu_present: Callable[[], bool] = _gpu_present) -> DeviceChoice:
    """The device to train on; an explicitly requested device that is absent is an InputError.

    On the NPU the adapter's precision_mode does mixed precision, so the model stays float32 in
    Keras and the NPU casts where it is safe. `npu_options` default: those given to `configure_npu`.
    """
    if requested not in DEVICES:
        raise InputError(f"[train] device must be one of {DEVICES}, got {requested!r}")
    if precision not in PRECISIONS:
        raise InputError(f"[train] precision must be one of {PRECISIONS}, got {precision!r}")
    if deterministic:
        compat.enable_op_determinism()
    if requested in ("auto", "npu"):
        npu_module = import_npu()
        if npu_module is not None:
            return _open_npu(npu_module, precision,
                             npu_options if npu_options is not None else _process_npu.configured, deterministic)
        if requested == "npu":
            raise _absent("npu", "the Ascend CANN TF adapter (npu_device) is not importable: install the "
                                 "CANN toolkit and its TensorFlow adapter and source set_env.sh")
    if requested in ("auto", "gpu"):
        if gpu_present():
            return _use_gpu(precision)
        if requested == "gpu":
            raise _absent("gpu", "TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty)")
    return _use_cpu()
