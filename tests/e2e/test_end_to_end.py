"""`luigi --module pipeline AllTasks` end to end on tiny synthetic data: on the CPU, on one NPU and on two NPU
ranks (the Ascend adapter played by tests/helpers/npu_standin.py through tests/npu_site), as a user runs it."""
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TINY = ["--raw-synthetic-users", "400", "--raw-synthetic-items", "300", "--raw-synthetic-categories", "12",
        "--preprocess-num-shards", "2", "--preprocess-maxlen", "6", "--preprocess-prebatch", "64",
        "--train-epochs", "2", "--train-batch-size", "128", "--train-embed-dim", "8", "--train-mlp-hidden", "16",
        "--train-attention-hidden", "8"]


def all_tasks(data_dir: Path, *extra: str, adapter: bool = False, record: str = "") -> subprocess.CompletedProcess:
    paths = [str(REPO)] + ([str(REPO / "tests" / "npu_site")] if adapter else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "NPU_STANDIN_RECORD": record}
    command = [sys.executable, "-m", "luigi", "--module", "pipeline", "AllTasks", "--paths-data-dir", str(data_dir),
               *TINY, *extra]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def metrics_of(data_dir: Path) -> dict:
    (run_dir,) = (data_dir / "runs").iterdir()
    return json.loads((run_dir / "metrics.json").read_text())


def test_all_tasks_on_the_cpu(tmp_path):
    finished = all_tasks(tmp_path / "data", "--train-device", "cpu", "--train-model", "din")
    assert finished.returncode == 0, finished.stderr[-3000:]
    metrics = metrics_of(tmp_path / "data")
    assert (metrics["device"], metrics["training_done"]) == ("cpu", True)
    assert metrics["test"]["auc"] > metrics["popularity_test_auc"] - 0.05 and 0.5 < metrics["test"]["auc"] <= 1
    assert metrics["rela_impr"]["vs_din"] == 0.0 and metrics["rela_impr"]["vs_popularity"] == pytest.approx(
        (metrics["test"]["auc"] - 0.5) / (metrics["popularity_test_auc"] - 0.5) - 1)


def test_all_tasks_on_one_npu_with_loss_scaling(tmp_path):
    """With every order-aware input of din_seq: static shapes, the time gaps read and exported."""
    record = str(tmp_path / "calls")
    finished = all_tasks(tmp_path / "data", "--train-device", "npu", "--train-model", "din_seq",
                         "--train-sequence-features", "recency,time_gap,last_item", adapter=True, record=record)
    assert finished.returncode == 0, finished.stderr[-3000:]
    metrics = metrics_of(tmp_path / "data")
    assert (metrics["device"], metrics["precision"]) == ("npu", "mixed") and "auc" in metrics["test"]
    assert metrics["params"]["model"] == "din_seq" and metrics["rela_impr"]["vs_din"] is None  # no plain-DIN run
    assert "RelaImpr vs plain DIN: evaluate the same settings with --train-model din first" in finished.stdout
    (saved_model,) = glob.glob(str(tmp_path / "data" / "runs" / "*" / "saved_model"))
    assert "hist_gap" in str(list(Path(saved_model).glob("saved_model.pb"))[0].read_bytes())
    (calls_file,) = glob.glob(record + ".*.json")
    names = [name for name, _ in json.loads(Path(calls_file).read_text())["calls"]]
    assert names.count("open") == 1  # TrainDIN and EvaluateDIN share the device opened once
    assert "NpuLossScaleOptimizer" in names


def test_all_tasks_on_two_npu_ranks(tmp_path):
    rank_table = tmp_path / "rank_table.json"
    rank_table.write_text(json.dumps({  # rank 0 on NPU 5, rank 1 on NPU 2, as hccl_tools.py writes it
        "status": "completed", "version": "1.0", "server_count": "1", "server_list": [
            {"server_id": "10.0.0.1", "host_nic_ip": "reserve", "device": [
                {"device_id": "2", "device_ip": "192.168.100.103", "rank_id": "1"},
                {"device_id": "5", "device_ip": "192.168.100.106", "rank_id": "0"}]}]}))
    record = str(tmp_path / "calls")
    finished = all_tasks(tmp_path / "data", "--train-device", "npu", "--npu-devices", "2", "--npu-rank-table-file",
                         str(rank_table), adapter=True, record=record)
    assert finished.returncode == 0, finished.stderr[-3000:]
    metrics = metrics_of(tmp_path / "data")
    assert (metrics["strategy"], metrics["workers"], metrics["device"]) == ("NPU ranks (HCCL)", 2, "npu")
    assert [record["epoch"] for record in metrics["epochs"]] == [1, 2] and "auc" in metrics["test"]
    ranks = {}
    for path in glob.glob(record + ".*.json"):
        recorded = json.loads(Path(path).read_text())
        if recorded["environment"]["RANK_ID"] is not None:
            ranks[recorded["environment"]["RANK_ID"]] = recorded
    assert sorted(ranks) == ["0", "1"]
    for rank, recorded in ranks.items():
        assert recorded["environment"]["ASCEND_DEVICE_ID"] == {"0": "5", "1": "2"}[rank]
        assert recorded["environment"]["HCCL_CONNECT_TIMEOUT"] == "1800"
        assert json.loads(recorded["environment"]["DIN_HISTORY_CAPACITY"])["batch_size"] == 128  # measured once
        calls = recorded["calls"]
        (opened,) = [details for name, details in calls if name == "open"]
        assert opened["options"]["_distribute.rank_id"] == rank
        reductions = [details for name, details in calls if name == "all_reduce"]
        # The gradients' all-reduce is recorded once: it is traced into the compiled step (HCCL ops in the graph).
        assert [details["reduction"] for details in reductions].count("mean") == 1
        assert [name for name, _ in calls].count("broadcast") == 1  # rank 0's variables, once
