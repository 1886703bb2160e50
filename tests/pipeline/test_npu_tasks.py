"""The `[npu]` section through Luigi: luigi.cfg and --npu-... values, early errors, one NPU per process."""
import json

import luigi
import pytest

from din_common.errors import InputError
from din_common.feature_spec import FeatureSpec
from din_model.device import selection as device
from din_model.device.npu_options import NpuOptions
from din_model.params import run_id
from pipeline.tasks import stage2
from tests.helpers.din_fixtures import write_random_fixture
from tests.helpers.luigi_config import luigi_settings
from tests.helpers.npu_standin import NpuStandin
from tests.helpers.cli_capture import assert_one_clear_line, build_and_capture
from tests.helpers.train_settings import TRAIN_SETTINGS, FixtureShards


def test_the_npu_section_of_luigi_cfg_and_the_command_line(tmp_path):
    with luigi_settings(paths={"data_dir": tmp_path}):  # luigi.cfg's [npu] is all defaults, the op cache in data_dir
        assert stage2.current_npu_options() == NpuOptions(op_compiler_cache_dir=str(tmp_path / "npu_op_cache"))
        with luigi_settings(npu={"op_compiler_cache_mode": "disable"}):
            assert stage2.current_npu_options().op_compiler_cache_dir == ""
    with luigi_settings(npu={"precision_mode": "force_fp16", "device_id": "2", "dump_path": str(tmp_path),
                             "op_compiler_cache_dir": str(tmp_path / "cache")}):
        assert stage2.current_npu_options() == NpuOptions(precision_mode="force_fp16", device_id=2, dump_path=str(
            tmp_path), op_compiler_cache_dir=str(tmp_path / "cache"))
    with luigi_settings(npu={"precison_mode": "force_fp16"}):  # Luigi itself would ignore a misspelt key
        with pytest.raises(InputError, match=r"\[npu\] has no setting 'precison_mode'"):
            stage2.current_npu_options()


def test_a_bad_npu_setting_stops_train_din_before_stage_one(tmp_path):
    ok, lines = build_and_capture(stage2.TrainDIN(), paths={"data_dir": tmp_path / "data"}, npu={"dump_mode": "both"})
    assert not ok
    assert_one_clear_line(lines, r"\[npu\] dump_mode = 'both': expected one of input, output, all")
    assert not (tmp_path / "data").exists()  # stage 1 never ran


def test_train_then_evaluate_in_one_process_open_the_npu_once(tmp_path, monkeypatch):
    """EvaluateDIN after TrainDIN in one `luigi` run: one options setup, one open, one as_default."""
    npu = NpuStandin().install(monkeypatch)
    monkeypatch.setattr(device, "_process_npu", device._ProcessNpu())
    spec = write_random_fixture(tmp_path, sizes=(("train", 300), ("val", 100), ("test", 100)))
    monkeypatch.setattr(stage2.RunTask, "preprocess_task", lambda self: FixtureShards(spec=str(spec)))
    dump = tmp_path / "dump"
    with luigi_settings(paths={"data_dir": tmp_path}, train={**TRAIN_SETTINGS, "device": "npu"},
                        npu={"precision_mode": "force_fp32", "dump_path": dump, "dump_step": "0"}):
        assert luigi.build([stage2.EvaluateDIN()], local_scheduler=True, log_level="WARNING")
    names = npu.call_names()
    assert [names.count(name) for name in ("global_options", "open", "as_default")] == [1, 1, 1]
    assert names.index("global_options") < names.index("open") < names.index("as_default")
    (opened,) = npu.named("open")
    assert {name: opened["options"][name] for name in ("precision_mode", "enable_dump", "dump_path", "dump_step")} \
        == {"precision_mode": "force_fp32", "enable_dump": "1", "dump_path": str(dump), "dump_step": "0"}
    assert (tmp_path / "runs").is_dir() and dump.is_dir()


def test_a_task_asking_for_other_npu_options_after_the_npu_opened_fails_clearly(monkeypatch):
    npu = NpuStandin().install(monkeypatch)
    monkeypatch.setattr(device, "_process_npu", device._ProcessNpu())
    device.select_device("npu", "mixed")
    with luigi_settings(npu={"precision_mode": "force_fp16"}):
        with pytest.raises(InputError, match="NPU is already open in this process with other options"):
            stage2._use_npu_options()
    assert npu.call_names() == ["global_options", "open", "as_default"]


def test_a_changed_numerics_setting_starts_a_new_run_and_a_dump_setting_does_not(tmp_path, monkeypatch):
    """A mixed run, then --npu-precision-mode force_fp16: a new run, not "already up to date" with the mixed model."""
    spec = write_random_fixture(tmp_path, sizes=(("train", 300), ("val", 100), ("test", 100)))
    monkeypatch.setattr(stage2.RunTask, "preprocess_task", lambda self: FixtureShards(spec=str(spec)))
    mixlist = tmp_path / "mixlist.json"
    mixlist.write_text(json.dumps({"black-list": {"to-add": ["MatMulV2"]}}))
    settings = {"paths": {"data_dir": tmp_path}, "train": {**TRAIN_SETTINGS, "device": "npu"}}

    def run_dir(**npu):
        with luigi_settings(**settings, npu=npu):
            return stage2.TrainDIN().run_dir()

    trained = []
    for precision_mode in ("", "force_fp16"):  # each `luigi` run is its own process: a fresh adapter
        npu = NpuStandin().install(monkeypatch)
        monkeypatch.setattr(device, "_process_npu", device._ProcessNpu())
        with luigi_settings(**settings, npu={"precision_mode": precision_mode}):
            assert luigi.build([stage2.TrainDIN()], local_scheduler=True, log_level="WARNING")
        (opened,) = npu.named("open")
        trained.append((opened["options"]["precision_mode"], run_dir(precision_mode=precision_mode)))
    (mixed_mode, mixed_run), (fp16_mode, fp16_run) = trained
    assert (mixed_mode, fp16_mode) == ("allow_mix_precision", "force_fp16")
    assert mixed_run != fp16_run and (mixed_run / "metrics.json").is_file() and (fp16_run / "metrics.json").is_file()
    assert run_dir(precision_mode="allow_mix_precision") == mixed_run  # the same numbers asked for explicitly
    assert run_dir(dump_path=str(tmp_path / "dump"), dump_step="0", profiling_output_dir=str(tmp_path / "p"),
                   op_debug_level="1", device_id="3") == mixed_run
    with_mixlist = run_dir(modify_mixlist=str(mixlist))
    assert with_mixlist != mixed_run
    mixlist.write_text(json.dumps({"white-list": {"to-add": ["MatMulV2"]}}))
    assert run_dir(modify_mixlist=str(mixlist)) != with_mixlist  # same file name, other contents
    with luigi_settings(paths={"data_dir": tmp_path}, train={**TRAIN_SETTINGS, "device": "cpu"}):
        assert stage2.TrainDIN().run_dir().name == run_id(stage2.current_train_params(), "fixture", None,
                                                          FeatureSpec.read(spec).content_fingerprint())
