"""`[npu]` settings: validation (one clear error per mistake), config text, and the adapter mapping.

The Luigi side (luigi.cfg, --npu-..., TrainDIN/EvaluateDIN) is in test_npu_tasks.py.
"""
import json

import pytest

from din_common.errors import InputError
from din_model.device.npu_options import NpuOptions


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


def test_defaults_set_the_precision_mode_from_train_precision_and_the_operator_cache():
    cache = {"op_compiler_cache_mode": "enable"}
    assert NpuOptions().adapter_settings("mixed") == {"precision_mode": "allow_mix_precision", **cache}
    assert NpuOptions().adapter_settings("fp32") == {"precision_mode": "force_fp32", **cache}
    assert NpuOptions(precision_mode="force_fp16").adapter_settings("fp32") == {"precision_mode": "force_fp16", **cache}
    assert NpuOptions(op_compiler_cache_mode="disable").adapter_settings("mixed")["op_compiler_cache_mode"] == "disable"
    assert (NpuOptions().computes_in("mixed"), NpuOptions(precision_mode="must_keep_origin_dtype").computes_in("mixed"),
            NpuOptions(precision_mode="allow_mix_precision_bf16").computes_in("fp32")) == ("mixed", "fp32", "mixed")


def test_the_modelzoo_switches_take_the_adapters_values_and_types():
    options = NpuOptions(hcom_parallel="true", op_debug_level="0", enable_exception_dump="2", graph_run_mode="1",
                         aoe_mode="4", op_compiler_cache_mode="force", op_compiler_cache_dir="cache")
    settings = options.adapter_settings("mixed")
    assert {name: settings[name] for name in ("hcom_parallel", "op_debug_level", "enable_exception_dump",
                                              "graph_run_mode", "op_compiler_cache_mode")} == {
        "hcom_parallel": True, "op_debug_level": 0, "enable_exception_dump": 2, "graph_run_mode": 1,
        "op_compiler_cache_mode": "force"}
    assert settings["aoe_config"] == {"aoe_mode": "4"}
    assert settings["op_compiler_cache_dir"].endswith("cache") and "op_compiler_cache_dir" in options.output_directories()


@pytest.mark.parametrize("name, value, allowed", [
    ("hcom_parallel", "yes", "true, false"), ("op_debug_level", "5", "0, 1, 2, 3, 4"),
    ("enable_exception_dump", "on", "0, 1, 2"), ("graph_run_mode", "train", r"1 \(training\), 0"),
    ("aoe_mode", "3", r"1 \(subgraph tuning\), 2"), ("op_compiler_cache_mode", "on", "enable, disable, force")])
def test_a_bad_modelzoo_switch_is_one_error_naming_it(name, value, allowed):
    with pytest.raises(InputError, match=problem(name, value, f"expected one of {allowed}")):
        NpuOptions(**{name: value})


def test_numerics_hold_what_changes_the_numbers_and_nothing_else(tmp_path, mixlist):
    base = NpuOptions(modify_mixlist=mixlist)
    assert base.numerics("mixed") == {"precision_mode": "allow_mix_precision", "loss_scaling": True,
                                      "modify_mixlist": base.numerics("mixed")["modify_mixlist"],
                                      "fusion_switch_file": "", "devices": 1}
    assert len(base.numerics("mixed")["modify_mixlist"]) == 64  # the file's sha256, not its name
    not_numerics = NpuOptions(modify_mixlist=mixlist, dump_path=str(tmp_path / "d"), dump_step="0", device_id=3,
                              profiling_output_dir=str(tmp_path / "p"), op_debug_level="1", hcom_parallel="false",
                              op_compiler_cache_mode="disable", enable_exception_dump="1", aoe_mode="2")
    assert not_numerics.numerics("mixed") == base.numerics("mixed")
    # the same numbers asked for two ways: one run
    assert NpuOptions(precision_mode="force_fp32").numerics("mixed") == NpuOptions().numerics("fp32")
    assert NpuOptions(loss_scaling="off").numerics("mixed") != NpuOptions().numerics("mixed")
    before = base.numerics("mixed")
    with open(mixlist, "w") as handle:
        json.dump({"black-list": {"to-add": ["MatMulV2"]}}, handle)
    assert base.numerics("mixed")["modify_mixlist"] != before["modify_mixlist"]  # same path, other contents


def test_nested_adapter_settings(tmp_path, mixlist):
    options = NpuOptions(modify_mixlist=mixlist, dump_path=str(tmp_path / "d"), profiling_output_dir=str(tmp_path))
    assert options.adapter_settings("mixed") == {
        "precision_mode": "allow_mix_precision", "op_compiler_cache_mode": "enable", "modify_mixlist": mixlist,
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
    with pytest.raises(InputError, match=r"^\[npu\] has no setting 'dump_dir'; the settings are aoe_mode, device_id, "):
        NpuOptions.from_strings({"dump_dir": "/tmp"})
