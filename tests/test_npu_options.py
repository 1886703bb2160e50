"""`[npu]` settings: validation (one clear error per mistake), config text, and the adapter mapping.

The Luigi side (luigi.cfg, --npu-..., TrainDIN/EvaluateDIN) is in test_npu_tasks.py.
"""
import json

import pytest

from din_common.errors import InputError
from din_model.npu_options import NpuOptions


def problem(name, value, expected):
    """The start of the error for `[npu] name = value`."""
    return rf"^\[npu\] {name} = '{value}': {expected}"


@pytest.fixture
def mixlist(tmp_path):
    path = tmp_path / "mixlist.json"
    path.write_text(json.dumps({"white-list": {"to-add": ["Conv2D"]}}))
    return str(path)


@pytest.mark.parametrize("settings, message", [
    ({"precision_mode": "mixed"}, problem("precision_mode", "mixed", "expected one of force_fp32, allow_fp32_to_fp16, "
                                                                     "force_fp16, must_keep_origin_dtype, ")),
    ({"dump_mode": "outputs"}, problem("dump_mode", "outputs", "expected one of input, output, all")),
    ({"dump_debug_mode": "overflow"}, problem("dump_debug_mode", "overflow",
                                              "expected one of aicore_overflow, atomic_overflow, all")),
    ({"dump_path": "d", "dump_step": "1,2"}, problem("dump_step", "1,2", 'expected steps and ranges joined by "\\|"')),
    ({"dump_step": "5"}, problem("dump_step", "5", r"data dump is off: set \[npu\] dump_path")),
    ({"dump_path": "a", "overflow_dump_path": "b"}, problem("overflow_dump_path", "b", "the adapter cannot dump data")),
    ({"profiling_options": '{"task_trace": "on"}'}, problem("profiling_options", '{"task_trace": "on"}',
                                                            r"profiling is off: set \[npu\] profiling_output_dir")),
    ({"profiling_output_dir": "p", "profiling_options": "task_trace=on"},
     problem("profiling_options", "task_trace=on", "expected a JSON object")),
    ({"profiling_output_dir": "p", "profiling_options": '{"task_trace": true}'},
     problem("profiling_options", '{"task_trace": true}', "expected a JSON object of string values")),
    ({"profiling_output_dir": "p", "profiling_options": '{"output": "/x"}'},
     problem("profiling_options", '{"output": "/x"}', 'leave "output" out')),
    ({"device_id": -1}, r"^\[npu\] device_id = -1: expected a device number"),
    ({"fusion_switch_file": "/nonexistent/fusion.cfg"}, problem("fusion_switch_file", "/nonexistent/fusion.cfg",
                                                                "no such file")),
    ({"modify_mixlist": "/nonexistent/mix.json"}, problem("modify_mixlist", "/nonexistent/mix.json", "no such file")),
])
def test_invalid_settings_are_one_input_error_naming_the_setting(settings, message):
    with pytest.raises(InputError, match=message) as raised:
        NpuOptions(**settings)
    name = message.split("] ")[1].split(" =")[0]
    assert f"--npu-{name.replace('_', '-')}" in str(raised.value)  # says where to fix it
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("content, complaint", [
    ("{not json", "expected a readable JSON file"),
    ('["Conv2D"]', "the file holds a list"),
    ('{"grey-list": {"to-add": ["Cast"]}}', "key 'grey-list' of the file"),
    ('{"black-list": {"add": ["Cast"]}}', "black-list.add of the file"),
    ('{"black-list": {"to-add": "Cast"}}', "black-list.to-add of the file"),
])
def test_a_mixlist_must_be_the_cann_mixlist_format(tmp_path, content, complaint):
    path = tmp_path / "mixlist.json"
    path.write_text(content)
    with pytest.raises(InputError, match=rf"^\[npu\] modify_mixlist = '{path}': .*{complaint}"):
        NpuOptions(modify_mixlist=str(path))


def test_output_directories_must_not_be_files(tmp_path):
    existing = tmp_path / "a_file"
    existing.write_text("")
    with pytest.raises(InputError, match=r"\[npu\] profiling_output_dir = .*expected a directory"):
        NpuOptions(profiling_output_dir=str(existing))


def test_defaults_set_only_the_precision_mode_from_train_precision():
    assert NpuOptions().adapter_settings("mixed") == {"precision_mode": "allow_mix_precision"}
    assert NpuOptions().adapter_settings("fp32") == {"precision_mode": "must_keep_origin_dtype"}
    assert NpuOptions(precision_mode="force_fp32").adapter_settings("mixed") == {"precision_mode": "force_fp32"}
    assert (NpuOptions().computes_in("mixed"), NpuOptions(precision_mode="force_fp32").computes_in("mixed"),
            NpuOptions(precision_mode="allow_mix_precision_bf16").computes_in("fp32")) == ("mixed", "fp32", "mixed")


def test_nested_adapter_settings(tmp_path, mixlist):
    options = NpuOptions(modify_mixlist=mixlist, dump_path=str(tmp_path / "d"), profiling_output_dir=str(tmp_path))
    assert options.adapter_settings("mixed") == {
        "precision_mode": "allow_mix_precision", "modify_mixlist": mixlist,
        "dump_config": {"enable_dump": True, "dump_path": str(tmp_path / "d"), "dump_mode": "output"},
        "profiling_config": {"enable_profiling": True, "profiling_options": json.dumps(
            {"output": str(tmp_path), "training_trace": "on", "task_trace": "on"})}}
    assert options.output_directories() == {"dump_path": str(tmp_path / "d"), "profiling_output_dir": str(tmp_path)}


def test_relative_paths_reach_the_adapter_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = NpuOptions(overflow_dump_path="overflow").adapter_settings("mixed")
    assert settings["dump_config"] == {"enable_dump_debug": True, "dump_path": str(tmp_path / "overflow"),
                                       "dump_debug_mode": "all"}


@pytest.mark.parametrize("environ, given, expected", [({}, None, 0), ({"ASCEND_DEVICE_ID": "6"}, None, 6),
                                                     ({"ASCEND_DEVICE_ID": "6"}, 2, 2)])
def test_device_id_setting_then_ascend_device_id_then_zero(environ, given, expected):
    assert NpuOptions(device_id=given).resolved_device_id(environ) == expected


def test_from_strings_parses_config_text():
    options = NpuOptions.from_strings({"device_id": " 4 ", "precision_mode": "force_fp16", "dump_mode": "input"})
    assert (options.device_id, options.precision_mode, options.dump_mode) == (4, "force_fp16", "input")
    assert NpuOptions.from_strings({"device_id": ""}).device_id is None
    with pytest.raises(InputError, match=r"^\[npu\] device_id = 'four': expected a device number"):
        NpuOptions.from_strings({"device_id": "four"})
    with pytest.raises(InputError, match=r"^\[npu\] has no setting 'dump_dir'; the settings are device_id, "):
        NpuOptions.from_strings({"dump_dir": "/tmp"})
