"""NPU ranks of one host: each rank's part of the data, who writes, waiting for rank 0 outside collectives,
each rank's environment, and the launcher's errors."""
import json
import subprocess
import sys
import threading
import time
import types

from pathlib import Path

import pytest

from din_common.errors import InputError, RunFailed
from din_model.parallel import npu_ranks
from din_model.device.npu_options import NpuOptions
from din_model.params import TrainParams
from tests.helpers.din_fixtures import write_random_fixture
from tests.helpers.rank_tables import device, table_1_0

PARAMS = TrainParams(embed_dim=4, attention_hidden="8", mlp_hidden="8", batch_size=64, device="npu", epochs=1)


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    from din_common.feature_spec import FeatureSpec

    root = tmp_path_factory.mktemp("data")
    return FeatureSpec.read(write_random_fixture(root, sizes=(("train", 1000), ("val", 100), ("test", 100)), num_shards=4))


def test_each_rank_reads_its_own_files_in_per_rank_batches_for_the_same_number_of_steps(spec, monkeypatch):
    asked = []
    real_make_dataset = npu_ranks.make_dataset

    def recording(spec, split, batch_size, **kwargs):
        asked.append((batch_size, kwargs["file_shard"], kwargs["drop_remainder"]))
        return real_make_dataset(spec, split, batch_size, **kwargs)

    monkeypatch.setattr(npu_ranks, "make_dataset", recording)
    device = types.SimpleNamespace(static_shapes=True)
    steps = []
    for rank in range(2):
        placement = npu_ranks.NpuRankPlacement(adapter=None, rank=rank, ranks=2)
        batches = list(placement.epoch_batches(spec, PARAMS, device, epoch=1))
        assert {int(labels.shape[0]) for _, labels in batches} == {32}  # a step is one global batch of 64
        assert placement.samples_in(batches[0][1], PARAMS) == 64
        steps.append(len(batches))
    assert asked == [(32, (0, 2), True), (32, (1, 2), True)]
    assert steps == [16, 16]  # ceil(1000 / 64) on every rank: no rank waits at an all-reduce


def test_only_rank_zero_writes_and_saves():
    saved = []
    state = types.SimpleNamespace(save=saved.append)
    for rank in range(3):
        placement = npu_ranks.NpuRankPlacement(adapter=None, rank=rank, ranks=3)
        assert placement.writes_run_dir == (rank == 0)
        placement.save(state, 1)
    assert saved == [1]


def test_ranks_need_divisible_batches_and_enough_files(spec):
    placement = npu_ranks.NpuRankPlacement(adapter=None, rank=0, ranks=3)
    with pytest.raises(InputError, match="batch_size 64 is the global batch and must be divisible by the 3 NPU ranks"):
        placement.check(spec, PARAMS)
    with pytest.raises(InputError, match="4 TFRecord file.*5 NPU ranks"):
        npu_ranks.NpuRankPlacement(adapter=None, rank=0, ranks=5).check(spec, PARAMS)


def two_npu_table(tmp_path, *devices):
    table = tmp_path / "rank_table.json"
    table.write_text(json.dumps(table_1_0(*(devices or (device(0, 0), device(1, 1))))))
    return str(table)


def test_launching_ranks_without_the_adapter_or_on_the_cpu_is_one_clear_error(tmp_path, monkeypatch):
    options = NpuOptions(devices=2, rank_table_file=two_npu_table(tmp_path))
    monkeypatch.setattr(npu_ranks.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match=r"\[npu\] devices = 2 .*\(npu_device\) is not importable"):
        npu_ranks.launch_ranks(options, "spec.json", tmp_path / "run", PARAMS)
    with pytest.raises(InputError, match=r"\[npu\] devices = 2 .* \[train\] device is cpu"):
        npu_ranks.launch_ranks(options, "spec.json", tmp_path / "run", TrainParams(device="cpu"))


def test_several_devices_need_a_rank_table(tmp_path):
    with pytest.raises(InputError, match=r"\[npu\] devices = 2: training on several NPUs needs the host's HCCL rank "
                                         r"table: set \[npu\] rank_table_file"):
        NpuOptions(devices=2)
    with pytest.raises(InputError, match=r"\[npu\] rank_table_file = .*: no such file"):
        NpuOptions(devices=2, rank_table_file=str(tmp_path / "missing.json"))
    table = two_npu_table(tmp_path)
    assert NpuOptions.from_strings({"devices": "2", "rank_table_file": table}).devices == 2
    with pytest.raises(InputError, match=r"\[npu\] devices = '0x'"):
        NpuOptions.from_strings({"devices": "0x"})


def test_a_table_that_changed_since_scheduling_is_refused_before_any_rank_starts(tmp_path, monkeypatch):
    table = two_npu_table(tmp_path)
    options = NpuOptions(devices=2, rank_table_file=table)
    Path(table).write_text(json.dumps(table_1_0(device(0, 0), device(1, 1), device(2, 2))))
    monkeypatch.setattr(npu_ranks.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(npu_ranks.subprocess, "Popen", lambda *args, **kwargs: pytest.fail("a rank was started"))
    with pytest.raises(InputError, match=r"lists 3 NPUs but \[npu\] devices = 2"):
        npu_ranks.launch_ranks(options, "spec.json", tmp_path / "run", PARAMS)


# Stands in for a rank process: rank 1 fails at once after two lines, rank 0 would train for a minute.
STAND_IN_RANK = ("import os, sys, time\n"
                 "if os.environ['RANK_ID'] == '1':\n"
                 "    print('opening device 1'); print('device 1 lost'); sys.exit(1)\n"
                 "time.sleep(60)\n")


def test_a_crashed_rank_stops_the_others_and_fails_the_run_naming_it(tmp_path, monkeypatch):
    options = NpuOptions(devices=2, rank_table_file=two_npu_table(tmp_path))
    monkeypatch.setattr(npu_ranks.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(npu_ranks, "_capacity_for_ranks", lambda spec_path, params: {})
    started = []
    real_popen = subprocess.Popen

    def stand_in_rank(command, **kwargs):
        assert command[1:3] == ["-m", "din_model.run.npu_rank"]
        started.append(real_popen([sys.executable, "-c", STAND_IN_RANK], **kwargs))
        return started[-1]

    monkeypatch.setattr(npu_ranks.subprocess, "Popen", stand_in_rank)
    begun = time.monotonic()
    with pytest.raises(RunFailed) as failed:
        npu_ranks.launch_ranks(options, "spec.json", tmp_path / "run", PARAMS, poll_seconds=0.05)
    assert failed.value.message == ("NPU rank 1 of 2 failed (exit code 1); the other ranks were stopped; "
                                    "its last lines:\n  opening device 1\n  device 1 lost")
    assert [process.returncode for process in started] == [-15, 1]  # rank 0 was terminated, not waited for
    assert time.monotonic() - begun < 30


def test_a_rank_given_a_setting_it_does_not_know_fails_with_one_line(tmp_path, capsys):
    from din_model.run import npu_rank

    code = npu_rank.main(["spec.json", str(tmp_path / "run"), json.dumps({"batch_size": 64, "bogus": 1}), "{}"])
    assert code == 30
    assert capsys.readouterr().err.startswith("ERROR: [train] unknown setting(s) ['bogus']; known: ")
    assert not (tmp_path / "run").exists()


def test_each_rank_opens_the_tables_device_of_its_rank_id_with_a_connect_timeout(tmp_path):
    table = NpuOptions(devices=2, rank_table_file=two_npu_table(tmp_path, device(5, 1), device(3, 0))).rank_table()
    environment = npu_ranks.rank_environment(1, table, "/sync", environ={})
    assert environment == {"RANK_SIZE": "2", "RANK_ID": "1", "ASCEND_DEVICE_ID": "5",
                           "RANK_TABLE_FILE": str(tmp_path / "rank_table.json"),
                           npu_ranks.SYNC_DIR_VARIABLE: "/sync",
                           "HCCL_CONNECT_TIMEOUT": str(npu_ranks.HCCL_CONNECT_TIMEOUT_S)}
    assert npu_ranks.rank_environment(0, table, "/sync", environ={})["ASCEND_DEVICE_ID"] == "3"
    assert "HCCL_CONNECT_TIMEOUT" not in npu_ranks.rank_environment(0, table, "/sync",
                                                                    environ={"HCCL_CONNECT_TIMEOUT": "600"})
    assert 120 <= npu_ranks.HCCL_CONNECT_TIMEOUT_S <= 7200  # CANN's allowed range


def test_the_other_ranks_wait_for_rank_zeros_epoch_outside_any_collective(tmp_path):
    """Rank 0 validates and checkpoints alone; rank 1 waits on its marker, not in the next step's all-reduce."""
    adapter = types.SimpleNamespace(distribute=types.SimpleNamespace(
        all_reduce=lambda *args, **kwargs: pytest.fail("a collective while rank 0 works alone")))
    rank0, rank1 = (npu_ranks.NpuRankPlacement(adapter, rank, 2, str(tmp_path)) for rank in (0, 1))
    saved, returned = [], []
    waiting = threading.Thread(target=lambda: (rank1.save(types.SimpleNamespace(save=saved.append), 1),
                                               rank1.barrier(), returned.append(True)))
    waiting.start()
    time.sleep(3 * npu_ranks.SYNC_POLL_S)
    assert waiting.is_alive() and not returned  # rank 0 is still "validating"
    rank0.save(types.SimpleNamespace(save=saved.append), 1)
    time.sleep(3 * npu_ranks.SYNC_POLL_S)
    assert waiting.is_alive()  # past the epoch, now at the final barrier: rank 0 is still exporting
    rank0.barrier()
    waiting.join(timeout=5)
    assert returned == [True] and saved == [1]  # only rank 0 saved
