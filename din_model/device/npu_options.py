"""The `[npu]` settings and how they map onto the Ascend adapter's `npu_device.global_options()`.

`NpuOptions` owns the `[npu]` section: constructing one validates every value (an unknown or invalid one is one
`InputError` naming `[npu] <name>`, what was given and what is allowed), so a mistake stops the run before any
training starts. `adapter_settings(precision)` is the nested {option: value} mapping that `din_model.device.selection` sets
on `global_options()` before `npu_device.open(device_id)`: top-level options plus the `dump_config` and
`profiling_config` groups, named as in the adapter's configs/*.py. Only the precision mode, the operator cache
(on by default, as ModelZoo's scripts have it) and what the user turned on are set; every other adapter option
keeps the adapter's default. Values go with the Python type the adapter's option setter checks (bool, int, str).

| setting | adapter option |
| precision_mode (empty: from [train] precision) | precision_mode |
| device_id (empty: ASCEND_DEVICE_ID, else 0) | open(device_id) |
| modify_mixlist (a mixlist JSON file) | modify_mixlist |
| fusion_switch_file | fusion_switch_file |
| dump_path (enables data dump), dump_step, dump_mode | dump_config.enable_dump/dump_path/dump_step/dump_mode |
| overflow_dump_path (enables overflow dump), dump_debug_mode | dump_config.enable_dump_debug/dump_path/dump_debug_mode |
| profiling_output_dir (enables profiling), profiling_options | profiling_config.enable_profiling/profiling_options |
| loss_scaling (dynamic or off) | npu_device.train.optimizer.NpuLossScaleOptimizer (float16 matrix products) |
| devices, rank_table_file | NPU ranks: RANK_SIZE, RANK_ID, ASCEND_DEVICE_ID, RANK_TABLE_FILE per process; the
  table is checked to list exactly `devices` NPUs (din_model/device/rank_table.py) |
| iterations_per_loop | npu_device.set_npu_loop_size: train steps per graph call (din_model/train/steps.py) |
| op_compiler_cache_mode, op_compiler_cache_dir | the same names (cache on by default, in the data dir) |
| hcom_parallel, op_debug_level, enable_exception_dump, graph_run_mode | the same names |
| aoe_mode | aoe_config.aoe_mode |

`PRECISION_MODES` says, per adapter precision mode, what CANN computes in reduced precision
(docs/ascend.md, "Precision modes", with the sources): loss scaling goes with every mode in which
matrix products take float16 inputs. `numerics(precision)` is what changes the trained numbers (the
resolved precision mode, loss scaling, the mixlist's and fusion switch file's contents, the number of
NPUs); the run id hashes it (din_model/params.py), and nothing else of `[npu]`.

Data dump and overflow dump share the adapter's one `dump_path` and cannot run together (CANN documents
enable_dump and enable_dump_debug as exclusive), so setting both directories is an error.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Mapping, Optional

from din_common.errors import InputError

# Every precision mode of the adapter's configs/npu_config.py -> the reduced-precision type CANN's definition of
# the mode lets matrix products (MatMul, BatchMatMul on the cube unit) take as input, or None when they keep the
# graph's float32. force_fp32 / cube_fp16in_fp32out take float16 inputs with float32 outputs where the cube
# supports it, the Ascend 910's way; must_keep_origin_dtype keeps float32 and sends a float32 MatMul the AI Core
# cannot run to the AI CPU. bfloat16 has float32's exponent range, so it needs no loss scaling.
PRECISION_MODES = {"force_fp32": "float16", "allow_fp32_to_fp16": "float16", "force_fp16": "float16",
                   "must_keep_origin_dtype": None, "allow_mix_precision": "float16", "cube_fp16in_fp32out": "float16",
                   "allow_mix_precision_fp16": "float16", "allow_mix_precision_bf16": "bfloat16",
                   "allow_fp32_to_bf16": "bfloat16"}  # in the order of the adapter's configs/npu_config.py
ADAPTER_PRECISION_MODES = tuple(PRECISION_MODES)
# `[train] precision` -> the adapter's precision_mode when `[npu] precision_mode` is empty: fp32 keeps float32
# everywhere but the cube's inputs, CANN's fastest float32 mode on the 910 (must_keep_origin_dtype may put every
# float32 MatMul on the AI CPU).
MODE_OF_TRAIN_PRECISION = {"mixed": "allow_mix_precision", "fp32": "force_fp32"}
OP_COMPILER_CACHE_MODES = ("enable", "disable", "force")
# The adapter options below take these values (configs/npu_config.py, aoe_config.py); "" leaves the adapter's
# default. Each value is converted to the Python type the adapter's option setter checks against.
SWITCHES = {"hcom_parallel": ({"true": True, "false": False}, "true, false"),
            "op_debug_level": ({str(level): level for level in range(5)}, "0, 1, 2, 3, 4"),
            "enable_exception_dump": ({str(level): level for level in range(3)}, "0, 1, 2 (2: newer adapters only)"),
            "graph_run_mode": ({"0": 0, "1": 1}, "1 (training), 0 (online inference)"),
            "aoe_mode": ({"1": "1", "2": "2", "4": "4"}, "1 (subgraph tuning), 2 (operator tuning), 4 (gradient "
                                                         "split tuning)")}
SWITCH_GROUPS = {"aoe_mode": "aoe_config"}  # options set inside an adapter option group
DUMP_MODES = ("input", "output", "all")  # dump_config.dump_mode
DUMP_DEBUG_MODES = ("aicore_overflow", "atomic_overflow", "all")  # dump_config.dump_debug_mode (CANN docs)
MIXLIST_LISTS = ("black-list", "white-list", "gray-list")
MIXLIST_CHANGES = ("to-remove", "to-add")
# Tracing switches profiled when `[npu] profiling_options` is empty.
DEFAULT_PROFILING_OPTIONS = {"training_trace": "on", "task_trace": "on"}
DEVICE_ID_VARIABLE = "ASCEND_DEVICE_ID"
LOSS_SCALING = ("dynamic", "off")
ITERATIONS_EXPECTED = "expected the number of train steps per NPU graph call: 1, 2, ... (e.g. 100)"
_DUMP_STEP = re.compile(r"^\d+(-\d+)?(\|\d+(-\d+)?)*$")


def _problem(name: str, value, expected: str) -> InputError:
    return InputError(f"[npu] {name} = {value!r}: {expected} (set it in luigi.cfg [npu] or with "
                      f"--npu-{name.replace('_', '-')})")


def _one_of(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise _problem(name, value, f"expected one of {', '.join(allowed)}")


def _existing_file(name: str, value: str) -> None:
    if value and not Path(value).is_file():
        raise _problem(name, value, "no such file" if not Path(value).exists() else "expected a file, this is not one")


def _directory(name: str, value: str) -> None:
    """A directory the adapter writes to: it may not exist yet (it is created before the NPU opens)."""
    if value and Path(value).exists() and not Path(value).is_dir():
        raise _problem(name, value, "expected a directory, this is an existing file")


def _read_json(name: str, path: str):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise _problem(name, path, f"expected a readable JSON file ({error})") from None


def _check_mixlist(path: str) -> None:
    """The CANN mixlist format: {"black-list"|"white-list"|"gray-list": {"to-remove"|"to-add": [op type, ...]}}."""
    mixlist = _read_json("modify_mixlist", path)
    shape = ('a JSON object {"black-list"|"white-list"|"gray-list": {"to-remove"|"to-add": ["OpType", ...]}}')
    if not isinstance(mixlist, dict):
        raise _problem("modify_mixlist", path, f"expected {shape}, the file holds a {type(mixlist).__name__}")
    for list_name, changes in mixlist.items():
        if list_name not in MIXLIST_LISTS or not isinstance(changes, dict):
            raise _problem("modify_mixlist", path, f"key {list_name!r} of the file: expected {shape}")
        for change, op_types in changes.items():
            if change not in MIXLIST_CHANGES or not (isinstance(op_types, list)
                                                     and all(isinstance(op, str) for op in op_types)):
                raise _problem("modify_mixlist", path, f"{list_name}.{change} of the file: expected {shape}")


def _content_hash(name: str, path: str) -> str:
    """sha256 of a settings file's contents ("" when not set): the file, not its name, says what was trained."""
    if not path:
        return ""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as error:
        raise _problem(name, path, f"cannot read the file ({error})") from None


def npu_adapter_present() -> bool:
    """Whether `import npu_device` would work, without importing it (it brings TensorFlow)."""
    if "npu_device" in sys.modules:
        return True
    return importlib.util.find_spec("npu_device") is not None


def setting_of(adapter_option: str) -> str:
    """The `[npu]` setting behind an adapter option path such as "aoe_config.aoe_mode" or "dump_config.dump_path"."""
    group, _, name = adapter_option.rpartition(".")
    if group == "dump_config":
        return "dump_path / overflow_dump_path / dump_step / dump_mode / dump_debug_mode"
    if group == "profiling_config":
        return "profiling_output_dir / profiling_options"
    return name


def _profiling_switches(text: str) -> dict:
    """`[npu] profiling_options`: a JSON object of profiling switches (strings), without "output"."""
    if not text:
        return dict(DEFAULT_PROFILING_OPTIONS)
    try:
        switches = json.loads(text)
    except ValueError as error:
        raise _problem("profiling_options", text, f"expected a JSON object such as "
                                                  f"{json.dumps(DEFAULT_PROFILING_OPTIONS)} ({error})") from None
    if not isinstance(switches, dict) or not all(isinstance(value, str) for value in switches.values()):
        raise _problem("profiling_options", text, "expected a JSON object of string values such as "
                                                  f"{json.dumps(DEFAULT_PROFILING_OPTIONS)}")
    if "output" in switches:
        raise _problem("profiling_options", text, 'leave "output" out: [npu] profiling_output_dir sets it')
    return switches


@dataclasses.dataclass(frozen=True)
class NpuOptions:
    """The `[npu]` section as given; validated on construction. Empty strings mean "not set"."""

    precision_mode: str = ""
    device_id: Optional[int] = None
    modify_mixlist: str = ""
    fusion_switch_file: str = ""
    dump_path: str = ""
    dump_step: str = ""
    dump_mode: str = "output"
    overflow_dump_path: str = ""
    dump_debug_mode: str = "all"
    profiling_output_dir: str = ""
    profiling_options: str = ""
    loss_scaling: str = "dynamic"  # NpuLossScaleOptimizer when the NPU computes in reduced precision
    devices: int = 1               # NPUs of this host to train on, one rank process each (din_model/parallel/npu_ranks.py)
    rank_table_file: str = ""      # the host's HCCL rank table; needed when devices > 1
    # Compiled operators are cached (the Luigi tasks put the cache in the data dir): else every run recompiles.
    op_compiler_cache_mode: str = "enable"
    op_compiler_cache_dir: str = ""
    hcom_parallel: str = ""
    op_debug_level: str = ""
    enable_exception_dump: str = ""
    graph_run_mode: str = ""
    aoe_mode: str = ""
    iterations_per_loop: int = 1   # train steps the NPU runs per call, in one graph (npu_device.set_npu_loop_size)

    def __post_init__(self):
        if self.precision_mode:
            _one_of("precision_mode", self.precision_mode, ADAPTER_PRECISION_MODES)
        if self.device_id is not None and (not isinstance(self.device_id, int) or self.device_id < 0):
            raise _problem("device_id", self.device_id, "expected a device number 0, 1, ... (empty: "
                                                        f"{DEVICE_ID_VARIABLE} or 0)")
        _existing_file("modify_mixlist", self.modify_mixlist)
        if self.modify_mixlist:
            _check_mixlist(self.modify_mixlist)
        _existing_file("fusion_switch_file", self.fusion_switch_file)
        for name in ("dump_path", "overflow_dump_path", "profiling_output_dir"):
            _directory(name, getattr(self, name))
        if self.dump_step and not _DUMP_STEP.match(self.dump_step):
            raise _problem("dump_step", self.dump_step, 'expected steps and ranges joined by "|", e.g. "0|5|10-20"')
        if self.dump_step and not self.dump_path:
            raise _problem("dump_step", self.dump_step, "data dump is off: set [npu] dump_path to turn it on")
        _one_of("dump_mode", self.dump_mode, DUMP_MODES)
        _one_of("dump_debug_mode", self.dump_debug_mode, DUMP_DEBUG_MODES)
        if self.dump_path and self.overflow_dump_path:
            raise _problem("overflow_dump_path", self.overflow_dump_path,
                           f"the adapter cannot dump data ([npu] dump_path = {self.dump_path!r}) and overflows at "
                           "the same time; set only one of the two")
        if self.profiling_options and not self.profiling_output_dir:
            raise _problem("profiling_options", self.profiling_options,
                           "profiling is off: set [npu] profiling_output_dir to turn it on")
        _profiling_switches(self.profiling_options)
        _one_of("loss_scaling", self.loss_scaling, LOSS_SCALING)
        if not isinstance(self.devices, int) or self.devices < 1:
            raise _problem("devices", self.devices, "expected the number of NPUs to train on: 1, 2, ..., 8")
        _existing_file("rank_table_file", self.rank_table_file)
        if self.devices > 1 and not self.rank_table_file:
            raise _problem("devices", self.devices, "training on several NPUs needs the host's HCCL rank table: set "
                                                    "[npu] rank_table_file (--npu-rank-table-file)")
        if self.devices > 1:
            if self.device_id is not None:
                raise _problem("device_id", self.device_id, f"with [npu] devices = {self.devices} each rank's NPU is "
                                                            "the rank table's device_id; leave device_id empty")
            self.rank_table()
        _one_of("op_compiler_cache_mode", self.op_compiler_cache_mode, OP_COMPILER_CACHE_MODES)
        _directory("op_compiler_cache_dir", self.op_compiler_cache_dir)
        for name, (values, allowed) in SWITCHES.items():
            if getattr(self, name) and getattr(self, name) not in values:
                raise _problem(name, getattr(self, name), f"expected one of {allowed}, or empty for the adapter's "
                                                          "default")
        if not isinstance(self.iterations_per_loop, int) or self.iterations_per_loop < 1:
            raise _problem("iterations_per_loop", self.iterations_per_loop, ITERATIONS_EXPECTED)

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> "NpuOptions":
        """From config text (luigi.cfg / --npu-...): every field a string; device_id "" means unset."""
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise InputError(f"[npu] has no setting {unknown[0]!r}; the settings are {', '.join(sorted(fields))}")
        given = {name: str(value).strip() for name, value in values.items()}
        device_id = given.pop("device_id", "")
        if device_id and not device_id.isdigit():
            raise _problem("device_id", device_id, f"expected a device number 0, 1, ... (empty: {DEVICE_ID_VARIABLE} "
                                                   "or 0)")
        devices = given.pop("devices", "1") or "1"
        if not devices.isdigit():
            raise _problem("devices", devices, "expected the number of NPUs to train on: 1, 2, ..., 8")
        iterations = given.pop("iterations_per_loop", "1") or "1"
        if not iterations.isdigit():
            raise _problem("iterations_per_loop", iterations, ITERATIONS_EXPECTED)
        return cls(device_id=int(device_id) if device_id else None, devices=int(devices),
                   iterations_per_loop=int(iterations), **given)

    def for_rank(self, device_id: int) -> "NpuOptions":
        """The options of one rank process: its own device, one device."""
        return dataclasses.replace(self, device_id=device_id, devices=1)

    def rank_table(self):
        """The checked rank table (din_model/device/rank_table.py) of `devices` NPUs."""
        from din_model.device.rank_table import read_rank_table

        return read_rank_table(self.rank_table_file, self.devices)

    def loss_scaled(self, precision: str) -> bool:
        """Dynamic loss scaling: on when matrix products take float16 inputs (their gradients could underflow)."""
        return self.loss_scaling == "dynamic" and PRECISION_MODES[self.resolved_precision_mode(precision)] == "float16"

    def resolved_precision_mode(self, precision: str) -> str:
        return self.precision_mode or MODE_OF_TRAIN_PRECISION[precision]

    def computes_in(self, precision: str) -> str:
        """"mixed" when the NPU computes anything in float16/bfloat16 under these options, else "fp32"."""
        return "fp32" if PRECISION_MODES[self.resolved_precision_mode(precision)] is None else "mixed"

    def numerics(self, precision: str) -> dict:
        """What of `[npu]` changes the trained numbers: the run id hashes it (files by their contents)."""
        return {"precision_mode": self.resolved_precision_mode(precision), "loss_scaling": self.loss_scaled(precision),
                "modify_mixlist": _content_hash("modify_mixlist", self.modify_mixlist),
                "fusion_switch_file": _content_hash("fusion_switch_file", self.fusion_switch_file), "devices": self.devices}

    def resolved_device_id(self, environ: Mapping[str, str] = os.environ) -> int:
        if self.device_id is not None:
            return self.device_id
        text = environ.get(DEVICE_ID_VARIABLE, "").strip()
        if not text:
            return 0
        if not text.isdigit():
            raise InputError(f"{DEVICE_ID_VARIABLE}={text!r} is not a device number 0, 1, ...; fix or unset it, or "
                             "set [npu] device_id (--npu-device-id)")
        return int(text)

    def output_directories(self) -> dict:
        """{setting: absolute directory} the adapter writes into; CANN wants them to exist before the device opens."""
        return {name: os.path.abspath(getattr(self, name))
                for name in ("dump_path", "overflow_dump_path", "profiling_output_dir", "op_compiler_cache_dir")
                if getattr(self, name)}

    def adapter_settings(self, precision: str) -> dict:
        """{option: value} for global_options(), with nested {group: {option: value}} for dump/profiling."""
        settings = {"precision_mode": self.resolved_precision_mode(precision),
                    "op_compiler_cache_mode": self.op_compiler_cache_mode}
        for name in ("modify_mixlist", "fusion_switch_file", "op_compiler_cache_dir"):
            if getattr(self, name):
                settings[name] = os.path.abspath(getattr(self, name))
        for name, (values, _) in SWITCHES.items():
            if getattr(self, name):
                group = settings.setdefault(SWITCH_GROUPS[name], {}) if name in SWITCH_GROUPS else settings
                group[name] = values[getattr(self, name)]
        if self.dump_path:
            settings["dump_config"] = {"enable_dump": True, "dump_path": os.path.abspath(self.dump_path),
                                       "dump_mode": self.dump_mode}
            if self.dump_step:
                settings["dump_config"]["dump_step"] = self.dump_step
        elif self.overflow_dump_path:
            settings["dump_config"] = {"enable_dump_debug": True, "dump_path": os.path.abspath(self.overflow_dump_path),
                                       "dump_debug_mode": self.dump_debug_mode}
        if self.profiling_output_dir:
            switches = {"output": os.path.abspath(self.profiling_output_dir),
                        **_profiling_switches(self.profiling_options)}
            settings["profiling_config"] = {"enable_profiling": True, "profiling_options": json.dumps(switches)}
        return settings
