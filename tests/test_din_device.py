"""Device and precision selection, with a recording stand-in for the Ascend adapter."""
import sys

import pytest

from din_model.device import select_device
from din_common.errors import InputError
from tests.din_fixtures import RecordingNpuDevice


@pytest.fixture
def fake_npu(monkeypatch):
    module = RecordingNpuDevice()
    monkeypatch.setitem(sys.modules, "npu_device", module)
    return module


@pytest.mark.parametrize("precision, mode", [("mixed", "allow_mix_precision"), ("fp32", "must_keep_origin_dtype")])
@pytest.mark.parametrize("requested", ["auto", "npu"])
def test_npu_is_opened_with_its_precision_mode(fake_npu, requested, precision, mode):
    choice = select_device(requested, precision)
    assert fake_npu.calls == ["global_options", ("open", mode), "as_default"]
    assert (choice.name, choice.precision, choice.static_shapes) == ("npu", precision, True)
    assert choice.describe() == {"device": "npu", "precision": precision}


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


def test_cpu_explicit_ignores_npu(fake_npu):
    assert select_device("cpu", "mixed").name == "cpu"
    assert fake_npu.calls == []


@pytest.mark.parametrize("machine, user_setting, expected", [
    ("x86_64", None, "1"), ("x86_64", "0", "0"), ("aarch64", None, None)])
def test_onednn_kernels_default_on_x86_only_and_a_user_setting_wins(machine, user_setting, expected):
    import os
    import subprocess

    environment = {name: value for name, value in os.environ.items() if name != "TF_ENABLE_ONEDNN_OPTS"}
    if user_setting is not None:
        environment["TF_ENABLE_ONEDNN_OPTS"] = user_setting
    script = ("import os, platform; platform.machine = lambda: %r; import din_model; "
              "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))" % machine)
    printed = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                             check=True).stdout.strip()
    assert printed == str(expected)
