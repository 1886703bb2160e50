"""HCCL rank tables (versions 1.0 and 1.2): each rank's NPU, and one clear error for a table HCCL would hang on."""
import json

import pytest

from din_common.errors import InputError
from din_model.device.npu_options import NpuOptions
from din_model.device.rank_table import read_rank_table
from tests.helpers.rank_tables import device, table_1_0, table_1_2


def write(tmp_path, content):
    path = tmp_path / "hccl.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_version_1_0_gives_each_rank_the_device_of_its_rank_id(tmp_path):
    path = write(tmp_path, table_1_0(device(4, 1), device(6, 0)))
    table = read_rank_table(path, 2)
    assert (table.version, table.ranks, table.device_of_rank) == ("1.0", 2, (6, 4))


def test_version_1_2_with_super_device_ids(tmp_path):
    path = write(tmp_path, table_1_2(device(0, 0, super_device_id="0"), device(1, 1, super_device_id="1")))
    assert read_rank_table(path, 2).device_of_rank == (0, 1)


@pytest.mark.parametrize("content, devices, complaint", [
    (table_1_0(device(0, 0), device(1, 1), device(2, 2)), 2,
     r"lists 3 NPUs but \[npu\] devices = 2; HCCL's world is the whole table"),
    (table_1_0(device(0, 0)), 2, r"lists 1 NPUs but \[npu\] devices = 2"),
    ("{not json", 2, "expected a readable JSON rank table"),
    ('["0", "1"]', 2, "expected a JSON object, the file holds a list"),
    ({**table_1_0(device(0, 0), device(1, 1)), "version": "2.0"}, 2, r"version = '2.0': expected one of 1.0, 1.2"),
    ({**table_1_0(device(0, 0), device(1, 1)), "status": "initializing"}, 2, "status = 'initializing'"),
    ({**table_1_0(device(0, 0)), "server_list": table_1_0(device(0, 0))["server_list"] * 2}, 2,
     "lists 2 servers; training runs on the NPUs of one host"),
    ({"status": "completed", "version": "1.0"}, 2, 'expected a non-empty "server_list"'),
    (table_1_0({"device_id": "0", "rank_id": "0"}, device(1, 1)), 2,
     r"server_list\[0\].device\[0\] has no 'device_ip'"),
    (table_1_2(device(0, 0), device(1, 1, super_device_id="1")), 2,
     r"server_list\[0\].device\[0\] has no 'super_device_id' \(version 1.2 devices need"),
    (table_1_0(device(0, 0), {**device(1, 1), "rank_id": 1}), 2,
     r"server_list\[0\].device\[1\].rank_id = 1: expected a number as a JSON string"),
    (table_1_0(device(0, 0), device(1, 0)), 2, r"rank_id values are \[0, 0\]: expected each of 0..1 once"),
    (table_1_0(device(3, 0), device(3, 1)), 2, r"device_id values \[3, 3\] repeat"),
])
def test_a_table_hccl_would_hang_or_fail_on_is_one_error_naming_the_file(tmp_path, content, devices, complaint):
    path = write(tmp_path, content)
    with pytest.raises(InputError, match=rf"^\[npu\] rank_table_file = '{path}': {complaint}") as raised:
        read_rank_table(path, devices)
    assert "\n" not in str(raised.value)


def test_npu_options_check_the_table_when_the_run_is_scheduled(tmp_path):
    path = write(tmp_path, table_1_0(device(0, 0), device(1, 1), device(2, 2), device(3, 3)))
    assert NpuOptions(devices=4, rank_table_file=path).rank_table().ranks == 4
    with pytest.raises(InputError, match=r"lists 4 NPUs but \[npu\] devices = 2"):
        NpuOptions(devices=2, rank_table_file=path)
    with pytest.raises(InputError, match=r"^\[npu\] device_id = 1: with \[npu\] devices = 4 each rank's NPU is the "
                                         "rank table's device_id"):
        NpuOptions(devices=4, rank_table_file=path, device_id=1)
