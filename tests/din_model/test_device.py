"""Device and precision selection; the NPU path against the strict stand-in of the Ascend adapter."""
import json
import sys

import pytest

from din_common.errors import InputError
from din_model.device import selection as device
from din_model.device.selection import configure_npu, select_device
from din_model.device.npu_options import NpuOptions
from tests.helpers.npu_standin import NpuConfig, NpuStandin

ADAPTER_DEFAULTS = NpuConfig().as_dict()


@pytest.fixture
def npu(monkeypatch):
    """A stand-in adapter installed as `npu_device`, and a process that has not opened an NPU yet."""
    monkeypatch.setattr(device, "_process_npu", device._ProcessNpu())
    return NpuStandin().install(monkeypatch)


def opened_options(npu):
    (opened,) = npu.named("open")
    return opened["options"]


def changed_from_defaults(options):
    return {name: value for name, value in options.items() if ADAPTER_DEFAULTS.get(name) != value}


@pytest.mark.parametrize("precision, mode", [("mixed", "allow_mix_precision"), ("fp32", "force_fp32")])
@pytest.mark.parametrize("requested", ["auto", "npu"])
def test_npu_is_opened_with_its_precision_mode(npu, requested, precision, mode):
    choice = select_device(requested, precision)
    assert npu.call_names() == ["global_options", "open", "as_default"]
    assert npu.named("open")[0]["device_id"] == 0
    assert changed_from_defaults(opened_options(npu)) == {"precision_mode": mode, "op_compiler_cache_mode": "enable"}
    # Both modes give the cube float16 inputs on the 910 (CANN's definitions): recorded as mixed, loss-scaled.
    assert (choice.name, choice.precision, choice.static_shapes, choice.loss_scaling) == ("npu", "mixed", True, True)
    assert choice.describe() == {"device": "npu", "precision": "mixed"}
    assert choice.handle is npu.default_handle


@pytest.mark.parametrize("mode, precision, loss_scaling", [
    ("must_keep_origin_dtype", "fp32", False), ("force_fp32", "mixed", True), ("cube_fp16in_fp32out", "mixed", True),
    ("allow_fp32_to_fp16", "mixed", True), ("force_fp16", "mixed", True), ("allow_mix_precision_fp16", "mixed", True),
    ("allow_mix_precision_bf16", "mixed", False), ("allow_fp32_to_bf16", "mixed", False)])
def test_loss_scaling_goes_with_every_mode_whose_matrix_products_take_float16(npu, mode, precision, loss_scaling):
    choice = select_device("npu", "fp32", npu_options=NpuOptions(precision_mode=mode))
    assert (choice.precision, choice.loss_scaling) == (precision, loss_scaling)
    assert choice.loss_scaling == NpuOptions(precision_mode=mode, loss_scaling="dynamic").loss_scaled("fp32")
    assert not NpuOptions(precision_mode=mode, loss_scaling="off").loss_scaled("fp32")


def test_the_modelzoo_options_reach_the_adapter_with_the_types_its_setter_checks(npu, tmp_path):
    options = NpuOptions(op_compiler_cache_dir=str(tmp_path / "cache"), hcom_parallel="false", op_debug_level="1",
                         enable_exception_dump="1", graph_run_mode="1", aoe_mode="2")
    select_device("npu", "mixed", npu_options=options)
    sent = opened_options(npu)
    assert {name: sent[name] for name in ("op_compiler_cache_mode", "op_compiler_cache_dir", "hcom_parallel",
                                          "op_debug_level", "enable_exception_dump", "graph_run_mode", "aoe_mode")} \
        == {"op_compiler_cache_mode": "enable", "op_compiler_cache_dir": str(tmp_path / "cache"), "hcom_parallel": "0",
            "op_debug_level": "1", "enable_exception_dump": "1", "graph_run_mode": "1", "aoe_mode": "2"}
    assert (tmp_path / "cache").is_dir()  # created before the device opened


def test_a_type_error_of_the_adapters_option_setter_is_one_line_naming_the_setting(npu):
    with pytest.raises(InputError, match=r"^\[npu\] hcom_parallel: the installed Ascend adapter rejects "
                                         r"global_options\(\).hcom_parallel = 'true' \(TypeError: Expected bool"):
        device._set_options(npu.global_options(), {"hcom_parallel": "true"})
    with pytest.raises(InputError, match=r"^\[npu\] aoe_mode: .* global_options\(\).aoe_config.aoe_mode = 3 "
                                         r"\(ValueError: '3' not in optional list"):
        device._set_options(npu.global_options(), {"aoe_config": {"aoe_mode": 3}})


def test_every_npu_option_reaches_global_options_by_its_adapter_name(npu, tmp_path):
    mixlist = tmp_path / "mixlist.json"
    mixlist.write_text(json.dumps({"black-list": {"to-add": ["MatMulV2"]}, "gray-list": {"to-remove": ["Cast"]}}))
    fusion = tmp_path / "fusion_switch.cfg"
    fusion.write_text('{"Switch": {"GraphFusion": {"ALL": "off"}}}')
    options = NpuOptions(precision_mode="allow_fp32_to_fp16", device_id=3, modify_mixlist=str(mixlist),
                         fusion_switch_file=str(fusion), dump_path=str(tmp_path / "dump"), dump_step="0|5|10-12",
                         dump_mode="all", profiling_output_dir=str(tmp_path / "prof"),
                         profiling_options='{"task_trace": "on", "aic_metrics": "PipeUtilization"}')
    choice = select_device("npu", "fp32", npu_options=options)
    assert npu.named("open")[0]["device_id"] == 3
    options_sent = opened_options(npu)
    profiling = json.loads(options_sent.pop("profiling_options"))
    assert changed_from_defaults(options_sent) == {
        "precision_mode": "allow_fp32_to_fp16", "modify_mixlist": str(mixlist), "fusion_switch_file": str(fusion),
        "enable_dump": "1", "dump_path": str(tmp_path / "dump"), "dump_step": "0|5|10-12", "dump_mode": "all",
        "enable_profiling": "1", "op_compiler_cache_mode": "enable"}
    assert profiling == {"output": str(tmp_path / "prof"), "task_trace": "on", "aic_metrics": "PipeUtilization"}
    assert (tmp_path / "dump").is_dir() and (tmp_path / "prof").is_dir()  # created before the device opened
    assert choice.precision == "mixed"  # allow_fp32_to_fp16 computes in float16 where it must


def test_overflow_dump_sets_the_debug_half_of_dump_config(npu, tmp_path):
    select_device("npu", "mixed", npu_options=NpuOptions(overflow_dump_path=str(tmp_path / "overflow"),
                                                         dump_debug_mode="aicore_overflow"))
    assert changed_from_defaults(opened_options(npu)) == {
        "precision_mode": "allow_mix_precision", "enable_dump_debug": "1", "dump_path": str(tmp_path / "overflow"),
        "dump_debug_mode": "aicore_overflow", "op_compiler_cache_mode": "enable"}


def test_device_id_comes_from_ascend_device_id_when_not_set(npu, monkeypatch):
    monkeypatch.setenv("ASCEND_DEVICE_ID", "5")
    select_device("npu", "mixed")
    assert npu.named("open")[0]["device_id"] == 5


def test_a_bad_ascend_device_id_is_named(npu, monkeypatch):
    monkeypatch.setenv("ASCEND_DEVICE_ID", "npu5")
    with pytest.raises(InputError, match=r"ASCEND_DEVICE_ID='npu5' is not a device number"):
        select_device("npu", "mixed")
    assert npu.calls == []


def test_the_npu_is_opened_once_per_process(npu):
    configure_npu(NpuOptions(precision_mode="force_fp16"))
    first = select_device("npu", "mixed")
    configure_npu(NpuOptions(precision_mode="force_fp16"))  # EvaluateDIN after TrainDIN, same settings
    second = select_device("npu", "mixed")
    assert npu.call_names() == ["global_options", "open", "as_default"]
    assert second.handle is first.handle


def test_other_options_once_the_npu_is_open_are_an_input_error(npu):
    select_device("npu", "mixed")
    with pytest.raises(InputError, match=r"NPU is already open in this process with other options \(precision_mode: "
                                         r"open with 'allow_mix_precision', now asked for 'force_fp16'\)"):
        configure_npu(NpuOptions(precision_mode="force_fp16"))
    with pytest.raises(InputError, match=r"device_id: open with 0, now asked for 1"):
        select_device("npu", "mixed", npu_options=NpuOptions(device_id=1))
    with pytest.raises(InputError, match=r"precision_mode: open with 'allow_mix_precision', now asked for "
                                         r"'force_fp32'"):
        select_device("npu", "fp32")
    assert npu.call_names() == ["global_options", "open", "as_default"]


def test_an_option_the_installed_adapter_rejects_is_an_input_error(npu, monkeypatch):
    """An older CANN adapter that lacks a precision mode: its ValueError becomes one clear line."""
    monkeypatch.setitem(NpuConfig._OPTIONS, "precision_mode", (None, ("allow_mix_precision",)))
    with pytest.raises(InputError, match=r"^\[npu\] precision_mode: the installed Ascend adapter rejects "
                                         r"global_options\(\).precision_mode = 'force_fp16' \(ValueError: "
                                         r"'force_fp16' not in optional list"):
        select_device("npu", "mixed", npu_options=NpuOptions(precision_mode="force_fp16"))
    assert "open" not in npu.call_names()


def test_auto_without_npu_or_gpu_is_cpu_fp32(monkeypatch):
    monkeypatch.delitem(sys.modules, "npu_device", raising=False)
    choice = select_device("auto", "mixed", gpu_present=lambda: False)
    assert (choice.name, choice.precision, choice.dtype_policy) == ("cpu", "fp32", "float32")


def test_gpu_mixed_uses_float16_policy_and_loss_scaling():
    choice = select_device("auto", "mixed", import_npu=lambda: None, gpu_present=lambda: True)
    assert (choice.name, choice.precision, choice.dtype_policy, choice.loss_scaling) == \
        ("gpu", "mixed", "mixed_float16", True)
    fp32 = select_device("gpu", "fp32", import_npu=lambda: None, gpu_present=lambda: True)
    assert (fp32.dtype_policy, fp32.loss_scaling) == ("float32", False)


def test_absent_devices_asked_for_explicitly_are_input_errors():
    with pytest.raises(InputError, match=r"\[train\] device = npu, but the Ascend CANN TF adapter"):
        select_device("npu", "mixed", import_npu=lambda: None)
    with pytest.raises(InputError, match=r"\[train\] device = gpu, but TensorFlow sees no GPU"):
        select_device("gpu", "mixed", import_npu=lambda: None, gpu_present=lambda: False)


def test_unknown_device_or_precision():
    with pytest.raises(InputError, match="device"):
        select_device("tpu", "mixed")
    with pytest.raises(InputError, match="precision"):
        select_device("cpu", "bf16")


def test_cpu_explicit_ignores_npu(npu):
    assert select_device("cpu", "mixed").name == "cpu"
    assert npu.calls == []


@pytest.mark.parametrize("precision, options, wrapped", [
    ("mixed", NpuOptions(), True), ("mixed", NpuOptions(loss_scaling="off"), False), ("fp32", NpuOptions(), True),
    ("mixed", NpuOptions(precision_mode="force_fp32"), True),
    ("mixed", NpuOptions(precision_mode="must_keep_origin_dtype"), False)])
def test_npu_mixed_precision_scales_the_loss_with_the_adapters_optimizer(npu, precision, options, wrapped):
    from din_model.train.optimizer import FusedAdam

    choice = select_device("npu", precision, npu_options=options)
    optimizer = choice.wrap_optimizer(FusedAdam(learning_rate=0.01))
    assert isinstance(optimizer, npu.module.train.optimizer.NpuLossScaleOptimizer) == wrapped
    assert [name for name in npu.call_names() if name == "NpuLossScaleOptimizer"] == (["NpuLossScaleOptimizer"]
                                                                                      if wrapped else [])


@pytest.fixture
def op_determinism(monkeypatch):
    """Records compat.enable_op_determinism calls instead of switching this test process's kernels for good."""
    calls = []
    monkeypatch.setattr(device.compat, "enable_op_determinism", lambda: calls.append(True))
    return calls


def test_a_deterministic_run_sets_the_adapters_deterministic_option(npu, op_determinism, capsys):
    select_device("npu", "mixed", deterministic=True)
    assert changed_from_defaults(opened_options(npu)) == {
        "precision_mode": "allow_mix_precision", "op_compiler_cache_mode": "enable", "deterministic": "1"}
    assert op_determinism == [True]
    assert "WARNING" not in capsys.readouterr().out
    configure_npu(NpuOptions())  # EvaluateDIN of the same deterministic run: the same setup, no error
    select_device("npu", "mixed", deterministic=True)
    with pytest.raises(InputError, match=r"deterministic: open with 1, now asked for None"):
        select_device("npu", "mixed")


def test_an_adapter_without_the_deterministic_option_gets_a_warning(npu, op_determinism, capsys, monkeypatch):
    monkeypatch.delitem(NpuConfig._OPTIONS, "deterministic")
    select_device("npu", "mixed", deterministic=True)
    assert "deterministic" not in opened_options(npu)
    assert capsys.readouterr().out.startswith("WARNING: [train] deterministic: this Ascend adapter's global_options() "
                                              "has no deterministic option; ")
    assert op_determinism == [True]


def test_a_default_run_leaves_op_determinism_alone(op_determinism):
    assert select_device("cpu", "fp32").name == "cpu"
    assert op_determinism == []
