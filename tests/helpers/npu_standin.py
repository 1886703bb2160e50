"""A stand-in for the Ascend CANN TensorFlow 2 adapter `npu_device`, for tests on machines without an NPU.

It mirrors the public Python surface of the real adapter (Ascend/tensorflow, `tf_adapter_2.x/python/npu_device`,
built for TF 2.6.5) and behaves like it where this project depends on the behaviour:
- `global_options()` is one process-wide `NpuConfig`. Its options are fixed: setting an unknown option raises
  ValueError listing the known ones, a value outside an option's allowed list raises ValueError, or TypeError
  when the option has a default of another type (`hcom_parallel = "true"`). Nested groups
  (`dump_config`, `profiling_config`, `aoe_config`, `memory_config`, `experimental`) work the same way and
  `as_dict()` flattens them into one {name: string} mapping (booleans become "1"/"0"), as the real `open()`
  hands the backend.
- `open(device_id=None)` (default `ASCEND_DEVICE_ID`, else 0) returns a handle with `as_default()` (which
  replaces tf.function, tf.device, tf.py_function and tf.nn.dropout as the real one does:
  tests/helpers/npu_standin_default.py), `scope()`,
  `name()`, `workers_num`, `worker_id`, `is_cluster_worker()`; opening the same id again returns the same handle,
  another id raises RuntimeError. With `RANK_SIZE` > 1 it needs `RANK_TABLE_FILE` and `RANK_ID`, like the real one.
- `npu_device.train.optimizer.NpuLossScaleOptimizer(inner_optimizer, dynamic=True, initial_scale=None,
  dynamic_growth_steps=None)` subclasses tf.keras 2.6's `LossScaleOptimizer` (as the real one does) and, on
  Keras 3, `keras.optimizers.LossScaleOptimizer`; `last_step_finite` says whether the last step applied.
- `npu_device.distribute`: `all_reduce`, `broadcast`, `shard_and_rebatch_dataset`, `grouping_gradients_apply`,
  `grouping_broadcast`; outside a cluster (one worker) they pass values through, as the real ones do.

It is stricter than the real adapter where that one would silently do the wrong thing, and says what it is:
- changing an option after `open()` raises RuntimeError (the real adapter reads options only at `open()`);
- an attribute the real modules do not have raises AttributeError naming it; one they have but this stand-in
  does not model raises AttributeError saying so, so a test never passes on a made-up API.

Everything runs on the CPU: the handle's scope is /CPU:0, and in a cluster (RANK_SIZE > 1) the collective calls
act as if every rank held the same values (a sum is RANK_SIZE times them), which is what one process can check.
Every call is recorded in `NpuStandin.calls` as (name, details) with the values passed, so tests assert what
reached the adapter.

Use the `npu_standin` fixture (it installs `npu_device` and its submodules in sys.modules for one test), or
`NpuStandin().install(monkeypatch)`.
"""
from __future__ import annotations

import os
import sys
import types
from typing import Callable

import numpy as np
import pytest

from tests.helpers.npu_standin_default import AdapterReplacements

# The adapter's precision modes, in configs/npu_config.py order.
PRECISION_MODES = ("force_fp32", "allow_fp32_to_fp16", "force_fp16", "must_keep_origin_dtype", "allow_mix_precision",
                   "cube_fp16in_fp32out", "allow_mix_precision_fp16", "allow_mix_precision_bf16",
                   "allow_fp32_to_bf16")
ON_OFF = (True, False)
NPU_DEVICE_PREFIX = "/job:localhost/replica:0/task:0/device:NPU"


class OptionValue:
    """One adapter option: its default, its allowed values (None = anything) and the value set."""

    def __init__(self, default, optional):
        self._default = default
        self._optional = optional
        self._value = default

    @property
    def default(self):
        return self._default

    @property
    def optional(self):
        return self._optional

    @property
    def value(self):
        """The value as the backend receives it: None when unset, "1"/"0" for booleans, else a string."""
        if self._value is None:
            return None
        if self._value is True or self._value is False:
            return "1" if self._value else "0"
        return str(self._value)

    @value.setter
    def value(self, new_value):
        if isinstance(self._optional, (list, tuple)) and new_value not in self._optional:
            if self._default is not None and not isinstance(new_value, type(self._default)):  # as the real setter
                raise TypeError(f"Expected {type(self._default).__name__}, got {type(new_value).__name__}")
            raise ValueError(f"'{new_value}' not in optional list {list(self._optional)}")
        self._value = new_value

    def __bool__(self):
        return bool(self._value)


class DeprecatedValue(OptionValue):
    """An option the adapter still accepts but will drop; `replacement` names its successor (or None)."""

    def __init__(self, optional, *, replacement):
        super().__init__(None, optional)
        self.replacement = replacement


def _deprecated(optional, replacement=None):
    return lambda: DeprecatedValue(optional, replacement=replacement)


class NpuBaseConfig:
    """A fixed set of options (name -> OptionValue) and nested groups (name -> NpuBaseConfig).

    Subclasses list them in `_OPTIONS`: name -> (default, allowed values), a factory, or a config class.
    """

    _OPTIONS: dict = {}

    def __init__(self):
        for name, spec in self._OPTIONS.items():
            if isinstance(spec, type) and issubclass(spec, NpuBaseConfig):
                option = spec()
            elif callable(spec):
                option = spec()
            else:
                option = OptionValue(*spec)
            object.__setattr__(self, name, option)
        object.__setattr__(self, "_frozen_by", None)

    def __setattr__(self, key, value):
        if key not in self._OPTIONS:
            raise ValueError(f"{type(self).__name__} has no option {key}, all options {list(self._OPTIONS)}")
        if self._frozen_by is not None:
            raise RuntimeError(f"npu_device stand-in: option {key} set after npu_device.open(); the real adapter "
                               "reads global_options() only when it opens the device, so this change would be "
                               "silently ignored")
        current = getattr(self, key)
        if isinstance(current, OptionValue):
            current.value = value
        else:
            object.__setattr__(self, key, value)

    def _freeze(self, reason: str) -> None:
        object.__setattr__(self, "_frozen_by", reason)
        for name in self._OPTIONS:
            child = getattr(self, name)
            if isinstance(child, NpuBaseConfig):
                child._freeze(reason)

    def as_dict(self) -> dict:
        """Every option that has a value, nested groups flattened into the same mapping."""
        options = {}
        for name in self._OPTIONS:
            child = getattr(self, name)
            if isinstance(child, NpuBaseConfig):
                options.update(child.as_dict())
            elif child.value is not None:
                options[name] = child.value
        return options


class NpuDumpConfig(NpuBaseConfig):
    _OPTIONS = {"enable_dump": (False, ON_OFF), "dump_path": (None, None), "dump_step": (None, None),
                "dump_mode": ("output", ("input", "output", "all")), "enable_dump_debug": (False, ON_OFF),
                "dump_debug_mode": (None, None)}


class NpuProfilingConfig(NpuBaseConfig):
    # The real default is a JSON string of tracing switches with output "./"; only enable_profiling turns it on.
    _OPTIONS = {"enable_profiling": (False, ON_OFF),
                "profiling_options": ('{"output":"./","training_trace":"on","task_trace":"on"}', None)}


class NpuAoeConfig(NpuBaseConfig):
    _OPTIONS = {"aoe_mode": (None, ("1", "2", "4")), "work_path": ("./", None)}


class MemoryConfig(NpuBaseConfig):
    _OPTIONS = {"atomic_clean_policy": (0, (0, 1)), "static_memory_policy": (0, (0, 1, 2))}


class NpuMultiBranchesConfig(NpuBaseConfig):
    _OPTIONS = {"input_shape": (None, None), "dynamic_node_type": ("0", ("0",)), "dynamic_dims": (None, None)}


class LogicalDeviceDeployConfig(NpuBaseConfig):
    _OPTIONS = {"logical_device_cluster_deploy_mode": ("LB", ("LB", "SINGLE")), "logical_device_id": (None, None)}


class GraphMemoryOptimizeConfig(NpuBaseConfig):
    _OPTIONS = {"recompute": (None, ("auto", "manual"))}


class NpuExperimentalConfig(NpuBaseConfig):
    _OPTIONS = {"multi_branches_config": NpuMultiBranchesConfig,
                "logical_device_deploy_config": LogicalDeviceDeployConfig,
                "graph_memory_optimize_config": GraphMemoryOptimizeConfig, "resource_path_config": (None, None)}


class NpuConfig(NpuBaseConfig):
    """`npu_device.global_options()`: every option of the adapter's configs/npu_config.py."""

    _OPTIONS = {
        "graph_run_mode": (1, (0, 1)), "graph_memory_max_size": (None, None),
        "variable_memory_max_size": (None, None), "variable_format_optimize": _deprecated(ON_OFF),
        "enable_scope_fusion_passes": (None, None), "fusion_switch_file": (None, None),
        "precision_mode": (None, PRECISION_MODES),
        "op_select_implmode": _deprecated(("high_performance", "high_precision"), "op_precision_mode"),
        "optypelist_for_implmode": _deprecated(None, "op_precision_mode"),
        "op_compiler_cache_mode": ("disable", ("enable", "disable", "force")), "op_compiler_cache_dir": (None, None),
        "stream_max_parallel_num": (None, None), "hcom_parallel": (True, ON_OFF), "hcom_multi_mode": (None, None),
        "is_tailing_optimization": (False, ON_OFF), "op_debug_level": _deprecated((0, 1, 2, 3, 4), "op_debug_config"),
        "op_debug_config": (None, None), "debug_dir": (None, None), "modify_mixlist": (None, None),
        "enable_exception_dump": (0, (0, 1)), "dump_config": NpuDumpConfig, "aoe_config": NpuAoeConfig,
        "profiling_config": NpuProfilingConfig, "enable_small_channel": (False, ON_OFF),
        "deterministic": (0, (0, 1)), "op_precision_mode": (None, None), "graph_exec_timeout": (None, None),
        "topo_sorting_mode": (None, (0, 1, None)), "customize_dtypes": (None, None), "overflow_flag": (1, (0, 1)),
        "stream_sync_timeout": (-1, None), "event_sync_timeout": (-1, None), "external_weight": (False, ON_OFF),
        "memory_config": MemoryConfig, "jit_compile": (None, ON_OFF), "graph_compiler_cache_dir": (None, None),
        "experimental": NpuExperimentalConfig,
    }


class StrictModule(types.ModuleType):
    """A module that names what is missing: absent from the real adapter, or present there but not modelled here."""

    def __init__(self, name: str, members: dict, unmodelled: tuple = ()):
        super().__init__(name)
        self.__dict__.update(members)
        self.__dict__["_unmodelled"] = frozenset(unmodelled)

    def __getattr__(self, attribute: str):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        if attribute in self._unmodelled:
            raise AttributeError(f"the npu_device stand-in does not model {self.__name__}.{attribute} (the real "
                                 "adapter has it): add it to tests/helpers/npu_standin.py before using it")
        raise AttributeError(f"module '{self.__name__}' has no attribute '{attribute}': the real Ascend adapter "
                             "does not have it either")


class NpuDeviceHandle:
    """What `npu_device.open()` returns; kernels run on the CPU."""

    __slots__ = ("_standin", "_device_id", "workers_num", "worker_id")

    def __init__(self, standin: "NpuStandin", device_id: int, workers_num: int, worker_id: int):
        self._standin = standin
        self._device_id = device_id
        self.workers_num = workers_num
        self.worker_id = worker_id

    def name(self) -> str:
        return f"{NPU_DEVICE_PREFIX}:{self._device_id}"

    def scope(self):
        import tensorflow as tf

        return tf.device("/CPU:0")

    def is_cluster_worker(self) -> bool:
        return self.workers_num > 1 and 0 <= self.worker_id < self.workers_num

    def as_default(self) -> "NpuDeviceHandle":
        """The adapter's replacements of tf.function, tf.device and tf.nn.dropout (tests/helpers/npu_standin_default.py)."""
        self._standin.make_default(self)
        return self


def _keras_major_version() -> int:
    import tensorflow as tf

    return int(tf.keras.__version__.split(".")[0]) if hasattr(tf.keras, "__version__") else 3


def _loss_scale_optimizer_class(standin: "NpuStandin") -> type:
    """NpuLossScaleOptimizer on the LossScaleOptimizer of the Keras that tf.keras is (2.6 or 3)."""
    import tensorflow as tf

    keras3 = _keras_major_version() >= 3
    if keras3:
        import keras

        base = keras.optimizers.LossScaleOptimizer
    else:
        base = tf.keras.mixed_precision.LossScaleOptimizer

    def all_finite(grads):
        return tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])

    class NpuLossScaleOptimizer(base):
        """The adapter's loss-scale optimizer; here the overflow check is TensorFlow's own, on the CPU."""

        def __init__(self, inner_optimizer, dynamic=True, initial_scale=None, dynamic_growth_steps=None):
            standin.record("NpuLossScaleOptimizer", inner_optimizer=type(inner_optimizer).__name__, dynamic=dynamic,
                           initial_scale=initial_scale, dynamic_growth_steps=dynamic_growth_steps)
            if keras3:
                if not dynamic:
                    raise NotImplementedError("the npu_device stand-in on Keras 3 supports only dynamic=True: Keras "
                                              "3's LossScaleOptimizer has no fixed scale (tf.keras 2.6 has)")
                given = {"initial_scale": initial_scale, "dynamic_growth_steps": dynamic_growth_steps}
                super().__init__(inner_optimizer, **{name: value for name, value in given.items() if value is not None})
            else:
                super().__init__(inner_optimizer, dynamic, initial_scale, dynamic_growth_steps)
                self._last_step_finite = tf.Variable(False, trainable=False, name="npu_last_step_finite")

        @property
        def last_step_finite(self):
            return self._last_step_finite

        if keras3:
            def build(self, var_list):
                super().build(var_list)
                self._last_step_finite = self.add_variable(shape=(), dtype="bool", initializer="zeros",
                                                           aggregation="none", name="npu_last_step_finite")

            def check_finite(self, grads):
                finite = super().check_finite(grads)
                self._last_step_finite.assign(finite)
                return finite
        else:
            def apply_gradients(self, grads_and_vars, name=None, experimental_aggregate_gradients=True):
                grads_and_vars = tuple(grads_and_vars)  # a zip can be read once only
                self._last_step_finite.assign(all_finite([grad for grad, _ in grads_and_vars]))
                return super().apply_gradients(grads_and_vars, name, experimental_aggregate_gradients)

    return NpuLossScaleOptimizer


HCCL_REDUCTIONS = ("mean", "sum", "prod", "max", "min")


class NpuStandin:
    """One stand-in adapter: its modules, its process state (options, opened handles) and the recorded calls."""

    def __init__(self, *, lasting: bool = False):
        """`lasting`: as_default()'s replacements stay for the process (a subprocess, tests/npu_site), as the
        real adapter's do; otherwise `install(monkeypatch)` or `undo_with(monkeypatch)` must come first."""
        self.calls: list = []
        self.default_handle: NpuDeviceHandle | None = None
        self.replacements: AdapterReplacements | None = None
        self.graph_calls: dict = {}  # traced name -> (function name, concrete function) run under as_default()
        self._setattr = setattr if lasting else None
        self._options: NpuConfig | None = None
        self._handles: dict = {}
        self.modules = self._build_modules()

    # -- recording ------------------------------------------------------------------------------------------
    def record(self, name: str, **details) -> None:
        self.calls.append((name, details))

    def named(self, name: str) -> list:
        """The details of every recorded call of `name`, in order."""
        return [details for call, details in self.calls if call == name]

    def call_names(self) -> list:
        return [name for name, _ in self.calls]

    # -- npu_device.npu_device -------------------------------------------------------------------------------
    def global_options(self) -> NpuConfig:
        self.record("global_options")
        if self._options is None:
            self._options = NpuConfig()
        return self._options

    def open(self, device_id=None) -> NpuDeviceHandle:
        if device_id is None:
            device_id = int(os.getenv("ASCEND_DEVICE_ID", "0"))
        if device_id in self._handles:
            self.record("open", device_id=device_id, reused=True)
            return self._handles[device_id]
        if self._handles:
            raise RuntimeError(f"Failed create npu instance on device {device_id}: this process already opened "
                               f"device(s) {sorted(self._handles)}")
        if self._options is None:
            self._options = NpuConfig()
        options = self._options.as_dict()
        workers_num, worker_id = int(os.getenv("RANK_SIZE", "1")), 0
        if workers_num > 1:
            rank_table, rank_id = os.getenv("RANK_TABLE_FILE"), os.getenv("RANK_ID")
            if not rank_table:
                raise RuntimeError("You must specify a rank table file by set env RANK_TABLE_FILE in distribution mode")
            if not rank_id:
                raise RuntimeError("You must specify rank id by set env RANK_ID in distribution mode")
            options.update({"_distribute.rank_table": rank_table, "_distribute.rank_id": rank_id})
            worker_id = int(rank_id)
        self.record("open", device_id=device_id, options=options)
        self._options._freeze(f"device {device_id} opened")
        self._handles[device_id] = NpuDeviceHandle(self, device_id, workers_num, worker_id)
        return self._handles[device_id]

    def close(self) -> None:
        self.record("close")

    def record_graph_call(self, function, args, kwargs) -> None:
        """An outermost tf.function call under as_default(): its input shapes (None: unknown) and, once per
        traced graph, the concrete function in `graph_calls`."""
        import tensorflow as tf

        shapes = []
        for value in tf.nest.flatten((args, kwargs)):
            spec = getattr(value, "element_spec", None)  # an iterator: the shapes of the batches it yields
            for tensor in tf.nest.flatten(spec) if spec is not None else [value]:
                if hasattr(tensor, "shape") and hasattr(tensor, "dtype"):  # a tensor, spec or numpy array
                    shape = tf.TensorShape(tensor.shape)
                    shapes.append(None if shape.rank is None else tuple(shape.as_list()))
        name = function._python_function.__name__
        self.record("graph_call", function=name, shapes=shapes)
        args, kwargs = tf.nest.map_structure(lambda value: tf.convert_to_tensor(value) if isinstance(value, np.ndarray)
                                             else value, (args, kwargs))
        concrete = function.get_concrete_function(*args, **kwargs)  # the trace this call ran (no new trace)
        self.graph_calls.setdefault(str(concrete.name), (name, concrete))

    def make_default(self, handle: NpuDeviceHandle) -> None:
        self.record("as_default", device=handle.name())
        self.default_handle = handle
        if self.replacements is None:  # the real replacements are module-level: done once per process
            if self._setattr is None:
                raise RuntimeError("npu_device stand-in: as_default() would replace tf.function, tf.device and "
                                   "tf.nn.dropout for the rest of the test process; call install(monkeypatch) or "
                                   "undo_with(monkeypatch) first, or make it NpuStandin(lasting=True)")
            self.replacements = AdapterReplacements(self, self._setattr)

    def global_npu_ctx(self) -> NpuDeviceHandle | None:
        return self.default_handle

    def npu_compat_function(self, func=None, *args, **kwargs):
        """tf.function without XLA (the NPU compiles graphs itself), as the adapter's wrapper does."""
        import tensorflow as tf

        kwargs.pop("jit_compile", None)
        kwargs.pop("experimental_compile", None)

        def decorate(function):
            return tf.function(function, *args, **kwargs)

        return decorate(func) if func is not None else decorate

    def set_npu_loop_size(self, loop_size) -> None:
        self.record("set_npu_loop_size", loop_size=loop_size)

    def set_device_sat_mode(self, mode) -> None:
        self.record("set_device_sat_mode", mode=mode)

    # -- npu_device.distribute -------------------------------------------------------------------------------
    def _cluster(self) -> NpuDeviceHandle | None:
        handle = self.default_handle
        return handle if handle is not None and handle.is_cluster_worker() else None

    def all_reduce(self, values, reduction="mean", fusion=1, fusion_id=-1, group="hccl_world_group"):
        if reduction not in HCCL_REDUCTIONS:
            raise ValueError(f"all_reduce reduction must be one of {list(HCCL_REDUCTIONS)}, got {reduction!r}")
        count = len(values) if isinstance(values, (list, tuple)) else 1
        cluster = self._cluster()
        self.record("all_reduce", reduction=reduction, values=count, group=group, cluster=cluster is not None)
        if cluster is None or reduction in ("mean", "max", "min"):
            return values  # every rank holds these values: their mean, max and min are the values
        import tensorflow as tf

        ranks = cluster.workers_num
        reduce = (lambda value: value * ranks) if reduction == "sum" else (lambda value: value ** ranks)
        return tf.nest.map_structure(reduce, values)

    def broadcast(self, values, root_rank=0, fusion=2, fusion_id=0, group="hccl_world_group") -> None:
        count = len(values) if isinstance(values, (list, tuple)) else 1
        self.record("broadcast", root_rank=root_rank, values=count, group=group, cluster=self._cluster() is not None)

    def shard_and_rebatch_dataset(self, dataset, global_bs):
        handle = self._cluster()
        self.record("shard_and_rebatch_dataset", global_bs=global_bs,
                    workers_num=handle.workers_num if handle else 1, worker_id=handle.worker_id if handle else 0)
        if handle is None:
            return dataset, global_bs
        if global_bs % handle.workers_num:
            raise ValueError(f"Batch size must be divisible by num npus: {handle.workers_num}")
        return dataset.shard(handle.workers_num, handle.worker_id), global_bs // handle.workers_num

    def grouping_gradients_apply(self, apply_func: Callable, grads_and_vars, *args, **kwargs):
        grads_and_vars = tuple(grads_and_vars)
        self.record("grouping_gradients_apply", variables=len(grads_and_vars), cluster=self._cluster() is not None)
        return apply_func(grads_and_vars, *args, **kwargs)

    def grouping_broadcast(self, variables):
        self.record("grouping_broadcast", variables=len(variables), cluster=self._cluster() is not None)
        return variables

    # -- modules ----------------------------------------------------------------------------------------------
    def _build_modules(self) -> dict:
        """sys.modules entries, named and nested as in the real package (public names of each real module)."""
        def module(name, members, unmodelled=()):
            return StrictModule(name, members, unmodelled)

        device_functions = {"open": self.open, "global_options": self.global_options,
                            "npu_compat_function": self.npu_compat_function,
                            "set_npu_loop_size": self.set_npu_loop_size,
                            "set_device_sat_mode": self.set_device_sat_mode}
        hccl_functions = {"all_reduce": self.all_reduce, "broadcast": self.broadcast,
                          "shard_and_rebatch_dataset": self.shard_and_rebatch_dataset}
        grouping_functions = {"grouping_gradients_apply": self.grouping_gradients_apply,
                              "grouping_broadcast": self.grouping_broadcast}
        optimizer_class = _loss_scale_optimizer_class(self)

        option_base = module("npu_device.configs.option_base", {
            "OptionValue": OptionValue, "DeprecatedValue": DeprecatedValue, "NpuBaseConfig": NpuBaseConfig})
        npu_config = module("npu_device.configs.npu_config", {"NpuConfig": NpuConfig})
        dump_config = module("npu_device.configs.dump_config", {"NpuDumpConfig": NpuDumpConfig})
        profiling_config = module("npu_device.configs.profiling_config", {"NpuProfilingConfig": NpuProfilingConfig})
        configs = module("npu_device.configs", {"option_base": option_base, "npu_config": npu_config,
                                                "dump_config": dump_config, "profiling_config": profiling_config},
                         unmodelled=("run_context_options", "experimental", "aoe_config", "memory_config",
                                     "experimental_config"))
        core = module("npu_device.npu_device", {
            **device_functions, "close": self.close, "global_npu_ctx": self.global_npu_ctx,
            "NpuDeviceHandle": NpuDeviceHandle, "NPU": NPU_DEVICE_PREFIX},
            unmodelled=("gen_npu_ops", "get_device_sat_mode", "enable_v1", "npu_run_context", "stupid_repeat",
                        "watch_op_register", "wrap_cpu_only_api", "NpuCompatEagerFunc"))
        hccl = module("npu_device.distribute.hccl", dict(hccl_functions),
                      unmodelled=("npu_distributed_keras_optimizer_wrapper", "npu_callbacks_append"))
        distribute = module("npu_device.distribute", {**hccl_functions, **grouping_functions, "hccl": hccl})
        loss_scale = module("npu_device.train.optimizer.npu_loss_scale_optimizer",
                            {"NpuLossScaleOptimizer": optimizer_class},
                            unmodelled=("NpuExperimentalLossScaleOptimizer",))
        optimizer = module("npu_device.train.optimizer", {"NpuLossScaleOptimizer": optimizer_class,
                                                          "npu_loss_scale_optimizer": loss_scale})
        train = module("npu_device.train", {"optimizer": optimizer}, unmodelled=("npu_convert", "convert_dropout"))
        top = module("npu_device", {**device_functions, "npu_device": core, "configs": configs,
                                    "distribute": distribute, "train": train},
                     unmodelled=("gen_npu_ops", "npu_run_context", "keep_dtype_scope", "npu_recompute_scope", "ops",
                                 "compat"))
        return {m.__name__: m for m in (top, core, configs, option_base, npu_config, dump_config, profiling_config,
                                        distribute, hccl, train, optimizer, loss_scale)}

    @property
    def module(self) -> StrictModule:
        """The top-level `npu_device` module."""
        return self.modules["npu_device"]

    def install(self, monkeypatch) -> "NpuStandin":
        """Put `npu_device` and its submodules into sys.modules until the test ends."""
        for name, module in self.modules.items():
            monkeypatch.setitem(sys.modules, name, module)
        return self.undo_with(monkeypatch)

    def undo_with(self, monkeypatch) -> "NpuStandin":
        """as_default()'s replacements are undone with `monkeypatch` (when the test ends), and the test runs in a
        process that has not opened an NPU: a device this stand-in opens does not outlive the test."""
        from din_model.device import selection as device

        monkeypatch.setattr(device, "_process_npu", device._ProcessNpu())
        self._setattr = monkeypatch.setattr
        return self


@pytest.fixture
def npu_standin(monkeypatch) -> NpuStandin:
    """A fresh stand-in adapter installed as `npu_device` for one test."""
    return NpuStandin().install(monkeypatch)
