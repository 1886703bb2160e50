"""The `[npu]` settings and how they map onto the Ascend adapter's `npu_device.global_options()`.

`NpuOptions` owns the `[npu]` section: constructing one validates every value (an unknown or invalid one is one
`InputError` naming `[npu] <name>`, what was given and what is allowed), so a mistake stops the run before any
training starts. `adapter_settings(precision)` is the nested {option: value} mapping that `din_model.device` sets
on `global_options()` before `npu_device.open(device_id)`: top-level options plus the `dump_config` and
`profiling_config` groups, named as in the adapter's configs/*.py. Only what the user turned on is set; every
other adapter option keeps the adapter's default.

| setting | adapter option |
| precision_mode (empty: from [train] precision) | precision_mode |
| device_id (empty: ASCEND_DEVICE_ID, else 0) | open(device_id) |
| modify_mixlist (a mixlist JSON file) | modify_mixlist |
| fusion_switch_file | fusion_switch_file |
| dump_path (enables data dump), dump_step, dump_mode | dump_config.enable_dump/dump_path/dump_step/dump_mode |
| overflow_dump_path (enables overflow dump), dump_debug_mode | dump_config.enable_dump_debug/dump_path/dump_debug_mode |
| profiling_output_dir (enables profiling), profiling_options | profiling_config.enable_profiling/profiling_options |
| loss_scaling (dynamic or off) | npu_device.train.optimizer.NpuLossScaleOptimizer (mixed precision) |
| devices, rank_table_file | NPU ranks: RANK_SIZE, RANK_ID, ASCEND_DEVICE_ID, RANK_TABLE_FILE per process |
| iterations_per_loop | npu_device.set_npu_loop_size: train steps per graph call (din_model/run_state.py) |

Data dump and overflow dump share the adapter's one `dump_path` and cannot run together (CANN documents
enable_dump and enable_dump_debug as exclusive), so setting both directories is an error.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Mapping, Optional

from din_common.errors import InputError

# Every precision mode of the adapter's configs/npu_config.py.
ADAPTER_PRECISION_MODES = ("force_fp32", "allow_fp32_to_fp16", "force_fp16", "must_keep_origin_dtype",
                           "allow_mix_precision", "cube_fp16in_fp32out", "allow_mix_precision_fp16",
                           "allow_mix_precision_bf16", "allow_fp32_to_bf16")
# Modes that keep float32 arithmetic; every other mode lets the NPU compute in float16/bfloat16.
FULL_PRECISION_MODES = ("force_fp32", "must_keep_origin_dtype")
# `[train] precision` -> the adapter's precision_mode when `[npu] precision_mode` is empty.
MODE_OF_TRAIN_PRECISION = {"mixed": "allow_mix_precision", "fp32": "must_keep_origin_dtype"}
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
    devices: int = 1               # NPUs of this host to train on, one rank process each (din_model/npu_ranks.py)
    rank_table_file: str = ""      # the host's HCCL rank table; needed when devices > 1
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

    def loss_scaled(self, precision: str) -> bool:
        return self.loss_scaling == "dynamic" and self.computes_in(precision) == "mixed"

    def resolved_precision_mode(self, precision: str) -> str:
        return self.precision_mode or MODE_OF_TRAIN_PRECISION[precision]

    def computes_in(self, precision: str) -> str:
        """"mixed" when the NPU may use float16/bfloat16 arithmetic under these options, else "fp32"."""
        return "fp32" if self.resolved_precision_mode(precision) in FULL_PRECISION_MODES else "mixed"

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
                for name in ("dump_path", "overflow_dump_path", "profiling_output_dir") if getattr(self, name)}

    def adapter_settings(self, precision: str) -> dict:
        """{option: value} for global_options(), with nested {group: {option: value}} for dump/profiling."""
        settings = {"precision_mode": self.resolved_precision_mode(precision)}
        for name in ("modify_mixlist", "fusion_switch_file"):
            if getattr(self, name):
                settings[name] = os.path.abspath(getattr(self, name))
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
