"""The NPU first-host checks (din_model.run.npu_check), here against the stand-in adapter."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from din_model.run.npu_check import Verdicts, ai_cpu_ops, cann_supported_ops, check_all_reduce, run_checks
from din_model.device.npu_ops import NPU_OP_TYPES
from din_model.device.npu_options import NpuOptions
from tests.helpers.npu_standin import npu_standin  # noqa: F401  (fixture)
from tests.helpers.rank_tables import device, table_1_0

REPO = Path(__file__).resolve().parents[2]
DUMP_VARIABLES = ("DUMP_GE_GRAPH", "DUMP_GRAPH_LEVEL", "DUMP_GRAPH_PATH")

GE_DUMP = '''graph {
  name: "ge_default"
  op {
    name: "MatMul_1"
    type: "MatMul"
    attr { key: "_ge_attr_op_kernel_lib_name" value { s: "AIcoreEngine" } }
  }
  op {
    name: "cumsum"
    type: "Cumsum"
    attr { key: "_ge_attr_op_kernel_lib_name" value { s: "AIcpuEngine" } }
  }
  op {
    name: "no_engine"
    type: "NoOp"
  }
}
'''


def test_ai_cpu_ops_are_read_from_the_ge_graph_dump(tmp_path):
    assert ai_cpu_ops(tmp_path) is None  # no dump at all
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ge_proto_00000001_Build.txt").write_text(GE_DUMP)
    assert ai_cpu_ops(tmp_path) == {"Cumsum": "AIcpuEngine"}


def test_the_cann_op_list_is_found_in_either_layout(tmp_path):
    assert cann_supported_ops(str(tmp_path)) is None
    old_layout = tmp_path / "framework" / "built-in" / "tensorflow"
    old_layout.mkdir(parents=True)
    (old_layout / "npu_supported_ops.json").write_text(json.dumps({"MatMul": {}, "AddV2": {}}))
    assert cann_supported_ops(str(tmp_path)) == {"MatMul", "AddV2", "IteratorV2", "IteratorGetNext"}


@pytest.mark.slow
def test_the_check_runs_every_step_and_an_all_reduce_over_two_rank_processes(tmp_path, npu_standin, monkeypatch):
    opp = tmp_path / "opp" / "built-in" / "framework" / "tensorflow"
    opp.mkdir(parents=True)
    (opp / "npu_supported_ops.json").write_text(json.dumps({op: {} for op in NPU_OP_TYPES - {"Cumsum"}}))
    monkeypatch.setenv("ASCEND_OPP_PATH", str(tmp_path / "opp"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(REPO / "tests" / "npu_site")]))
    rank_table = tmp_path / "rank_table.json"
    rank_table.write_text(json.dumps(table_1_0(device(0, 0), device(1, 1))))
    for name in DUMP_VARIABLES:
        monkeypatch.setenv(name, "")  # run_checks sets them: restored when the test ends
    lines = []
    verdicts = run_checks(NpuOptions(), dump_dir=tmp_path / "dump", rank_table=str(rank_table), timeout=300,
                          echo=lines.append)
    found = {check: verdict for check, verdict, _ in verdicts.lines}
    assert found == {"open": "OK", "train step": "OK", "step loop": "OK", "predict step": "OK", "op list": "OK",
                     "CANN op list": "WARN", "AI CPU": "UNKNOWN", "all-reduce": "OK"}, lines
    assert not verdicts.failed and all(line.startswith("[npu_check] ") for line in lines)
    assert "Cumsum" in dict((check, detail) for check, _, detail in verdicts.lines)["CANN op list"]
    assert "expected [2.0, 4.0, 6.0], got [[2.0, 4.0, 6.0], [2.0, 4.0, 6.0]]" in lines[-1]
    assert os.environ["DUMP_GRAPH_PATH"] == str(tmp_path / "dump")


def test_an_adapter_that_cannot_open_fails_the_check_and_nothing_else_runs(tmp_path, npu_standin, monkeypatch):
    for name in DUMP_VARIABLES:
        monkeypatch.setenv(name, "")

    def broken_open(device_id=None):
        raise RuntimeError("Failed open npu device 0 : GE initialize failed")

    monkeypatch.setattr(npu_standin.module, "open", broken_open, raising=False)
    verdicts = run_checks(NpuOptions(), dump_dir=tmp_path, rank_table="", echo=lambda line: None)
    assert verdicts.lines == [("open", "FAIL", "Failed open npu device 0 : GE initialize failed")] and verdicts.failed


def test_without_a_rank_table_the_all_reduce_is_skipped():
    verdicts = Verdicts(echo=lambda line: None)
    check_all_reduce(verdicts, "", 1.0)
    assert verdicts.lines == [("all-reduce", "SKIP", "no rank table: set [npu] rank_table_file or pass --rank-table")]


def test_a_rank_table_of_another_size_fails_the_all_reduce_before_any_rank_starts(tmp_path):
    table = tmp_path / "rank_table.json"
    table.write_text(json.dumps(table_1_0(device(0, 0), device(1, 1), device(2, 2))))
    verdicts = Verdicts(echo=lambda line: None)
    check_all_reduce(verdicts, str(table), 1.0)
    ((check, verdict, detail),) = verdicts.lines
    assert (check, verdict) == ("all-reduce", "FAIL") and "lists 3 NPUs but [npu] devices = 2" in detail
