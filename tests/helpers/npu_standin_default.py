"""What the stand-in's `NpuDeviceHandle.as_default()` does to TensorFlow: the real adapter's replacements.

Derived from Ascend/tensorflow (branch master, commit 085a7b2e7feac20dae2e3371fe08ea34296ea9fc),
`tf_adapter_2.x/python/npu_device/`:
- npu_device.py lines 332-367 (`NpuDeviceHandle.as_default`): sets
  `def_function.Function.__call__ = _never_nested_function_call` (lines 239-255: a tf.function called while
  another one runs is inlined, its Python function traced into the caller's graph, falling back to a real
  call if that raises), `def_function.function = tf.function = npu_compat_function` (lines 258-273: the
  same tf.function with `jit_compile` / `experimental_compile` forced off), `ops.device =
  _device_consistent_with_context` (lines 335-344: `tf.device(anything)` stays on the context's current
  device, i.e. a no-op), `script_ops.EagerFunc = NpuCompatEagerFunc` and `tf.py_function =
  wrap_cpu_only_api(tf.py_function)` (lines 276-300: py_function bodies run on the CPU; the stand-in wraps
  tf.py_function only, as every kernel already runs on the CPU here), makes the NPU the
  context's default device, then calls `npu_convert.npu_convert_api()`.
- train/npu_convert.py lines 157-205 and train/convert_dropout.py lines 33-97: `tf.nn.dropout`,
  `tf.compat.v2.nn.dropout` and `nn_ops.dropout_v2` are replaced, on TF 2.6.2-2.6.999 and in graph mode
  only (eager calls and calls with a `noise_shape` go to the original), by `npu_dropout_v2`: the NPU ops
  `DropOutGenMask` (a keep mask from the rate and the seeds) and `DropOutDoMask` (x * mask / keep_prob),
  whose gradient is DropOutDoMask of the incoming gradient with the same mask.

How the stand-in differs, and why:
- The replacements are the real ones' behaviour, written here (not copied); the dropout is built from
  TensorFlow ops (RandomUniform, GreaterEqual, Cast, Mul, RealDiv: a mask kept with probability
  1 - rate, scaled by 1 / (1 - rate)) because DropOutGenMask / DropOutDoMask exist only in the adapter's
  `_npu_ops.so`; each graph-mode use is recorded as a "dropout" call so tests see the adapter path was taken.
- The version gate of the dropout replacement is not applied: the stand-in stands for the 2.6 adapter on
  every TensorFlow it runs under, so the modern stack's tests take the same NPU path.
- No NPU device exists, so the context's default device is left alone (kernels run on the CPU).
- Each outermost call made eagerly (a graph the NPU would run) is recorded with the shapes of its inputs and its traced
  function (`NpuStandin.graph_calls`), so tests check what the graph engine would be given.
- The real adapter never undoes its replacements (they last for the process). The stand-in undoes them
  when the test's monkeypatch is undone (the `npu_standin` fixture), so one test's adapter does not leak
  into the next; in a subprocess (tests/npu_site) they last for the process, as the real ones do.
"""
from __future__ import annotations

import contextlib
import importlib
import threading

_thread_local = threading.local()


def _function_modules():
    """(the Function class, the modules whose `function` attribute is tf.function) on this TensorFlow."""
    import tensorflow as tf

    function_class = type(tf.function(lambda: None))
    modules = [importlib.import_module(function_class.__module__)]
    with contextlib.suppress(ImportError):  # TF 2.6: def_function is the module; newer: a re-export of it
        modules.append(importlib.import_module("tensorflow.python.eager.def_function"))
    return function_class, [module for module in modules if hasattr(module, "function")]


class AdapterReplacements:
    """Applies `as_default()`'s replacements through `setattr` (a monkeypatch's, to be undone, or plain)."""

    def __init__(self, standin, setattr_function=setattr):
        import tensorflow as tf
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import nn_ops

        self.standin = standin
        function_class, function_modules = _function_modules()
        self.original_function = tf.function
        self.original_call = function_class.__call__
        self.original_dropout = tf.nn.dropout
        self.original_py_function = tf.py_function
        replaced_dropout = self.dropout_replacement()
        setattr_function(function_class, "__call__", self.never_nested_call())
        for module in function_modules:
            setattr_function(module, "function", self.compat_function)
        setattr_function(tf, "function", self.compat_function)
        setattr_function(ops, "device", self.device_of_context)
        setattr_function(tf, "py_function", self.cpu_only(tf.py_function))
        for module in {id(tf.nn): tf.nn, id(tf.compat.v2.nn): tf.compat.v2.nn}.values():
            setattr_function(module, "dropout", replaced_dropout)
        setattr_function(nn_ops, "dropout_v2", replaced_dropout)

    # -- npu_device.py: npu_compat_function, _never_nested_function_call, _device_consistent_with_context --
    def compat_function(self, func=None, *args, **kwargs):
        """tf.function with XLA off: the graph engine compiles the graph, not XLA."""
        def decorate(function):
            for flag in ("jit_compile", "experimental_compile"):
                if kwargs.get(flag):
                    self.standin.record("skip_xla", function=function.__name__, flag=flag)
                    kwargs[flag] = False
            return self.original_function(*args, **kwargs)(function)

        return decorate(func) if func is not None else decorate

    def never_nested_call(self):
        import tensorflow as tf

        original_call = self.original_call
        standin = self.standin

        def call(function, *args, **kwargs):
            entrance = getattr(_thread_local, "entrance_function", None)
            if entrance is not None:
                standin.record("inline", function=function._python_function.__name__, under=entrance)
                try:
                    return function._python_function(*args, **kwargs)
                except Exception:  # as the adapter: a function that cannot be inlined is called
                    return original_call(function, *args, **kwargs)
            _thread_local.entrance_function = function._python_function.__name__
            runs = tf.executing_eagerly()  # else traced into a graph being built (e.g. SavedModel export)
            try:
                result = original_call(function, *args, **kwargs)
                if runs:
                    standin.record_graph_call(function, args, kwargs)
                return result
            finally:
                _thread_local.entrance_function = None

        return call

    @staticmethod
    def device_of_context(*args, **kwargs):
        """`tf.device(...)` under the adapter: stay on the context's current device (a no-op)."""
        from tensorflow.python.eager import context

        return context.device(context.context().device_name)

    def cpu_only(self, function):
        """tf.py_function as `wrap_cpu_only_api` leaves it: its body runs on the CPU (here everything does)."""
        standin = self.standin

        def on_cpu(*args, **kwargs):
            standin.record("py_function_on_cpu")
            return function(*args, **kwargs)

        return on_cpu

    # -- train/convert_dropout.py: npu_dropout_v2 ------------------------------------------------------------
    def dropout_replacement(self):
        original, standin = self.original_dropout, self.standin

        def dropout(x, rate, noise_shape=None, seed=None, name=None):
            import tensorflow as tf

            if standin.default_handle is None or tf.executing_eagerly() or noise_shape is not None:
                return original(x, rate=rate, noise_shape=noise_shape, seed=seed, name=name)
            x = tf.convert_to_tensor(x, name="x")
            if not x.dtype.is_floating:
                raise ValueError(f"x must be a floating point tensor. Got a {x.dtype} tensor instead.")
            keep_prob = 1.0 - rate
            if isinstance(keep_prob, float) and not 0 < keep_prob <= 1.0:
                raise ValueError(f"keep_prob must be a float value or a scalar tensor in the range (0, 1], "
                                 f"got {keep_prob:g}")
            if isinstance(keep_prob, float) and keep_prob == 1.0:
                return x
            standin.record("dropout", rate=rate)
            with tf.name_scope(name or "npu_dropout"):
                keep = tf.cast(tf.random.uniform(tf.shape(x), seed=seed, dtype=x.dtype) >= rate, x.dtype)
                return x * keep / tf.cast(keep_prob, x.dtype)

        return dropout

