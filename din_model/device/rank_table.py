"""The HCCL rank table of one host: read, checked against `[npu] devices`, and each rank's NPU.

HCCL's world is every device the rank table lists, so a table that lists more (or fewer) devices
than the rank processes we start would leave HCCL waiting for ranks that never come. `read_rank_table`
refuses such a table before any rank starts, with one `InputError` naming the file and what is wrong.

The formats (CANN's "Preparing the Ranktable Resource Configuration File", TF adapter migration guide;
ModelZoo's hccl_tools.py writes version 1.0):
- version "1.0": {"status": "completed", "version": "1.0", "server_count": "1",
  "server_list": [{"server_id": ..., "device": [{"device_id": "0", "device_ip": "192.168.1.8",
  "rank_id": "0"}, ...]}]}
- version "1.2" (Atlas A3 SuperPoD): the same server_list whose devices also carry "super_device_id",
  plus a top-level "super_pod_list".
Numbers are JSON strings in both. We train on one host, so the table must list one server.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from din_common.errors import InputError

VERSIONS = ("1.0", "1.2")
DEVICE_FIELDS = {"1.0": ("device_id", "device_ip", "rank_id"),
                 "1.2": ("device_id", "device_ip", "rank_id", "super_device_id")}


@dataclasses.dataclass(frozen=True)
class RankTable:
    path: str
    version: str
    device_of_rank: tuple  # device_of_rank[r]: the NPU (device_id) of rank_id r

    @property
    def ranks(self) -> int:
        return len(self.device_of_rank)


def _bad(path: str, what: str) -> InputError:
    return InputError(f"[npu] rank_table_file = {path!r}: {what} (CANN's hccl_tools.py writes this file; fix it or "
                      "set --npu-rank-table-file)")


def _number(path: str, where: str, device: dict, field: str) -> int:
    value = device.get(field)
    if not (isinstance(value, str) and value.isdigit()):
        raise _bad(path, f"{where}.{field} = {value!r}: expected a number as a JSON string, e.g. \"0\"")
    return int(value)


def _devices(path: str, table: dict, version: str) -> list:
    """[(rank_id, device_id)] of the table's one server."""
    servers = table.get("server_list")
    if not isinstance(servers, list) or not servers:
        raise _bad(path, 'expected a non-empty "server_list"')
    if len(servers) != 1:
        raise _bad(path, f"lists {len(servers)} servers; training runs on the NPUs of one host, so the table must "
                         "list this host only")
    devices = servers[0].get("device") if isinstance(servers[0], dict) else None
    if not isinstance(devices, list) or not devices:
        raise _bad(path, 'server_list[0] has no "device" list')
    ranks = []
    for index, device in enumerate(devices):
        where = f"server_list[0].device[{index}]"
        if not isinstance(device, dict):
            raise _bad(path, f"{where} is not an object")
        missing = [field for field in DEVICE_FIELDS[version] if field not in device]
        if missing:
            raise _bad(path, f"{where} has no {', '.join(repr(field) for field in missing)} (version {version} "
                             f"devices need {', '.join(DEVICE_FIELDS[version])})")
        if not isinstance(device["device_ip"], str) or not device["device_ip"]:
            raise _bad(path, f"{where}.device_ip = {device['device_ip']!r}: expected the NPU's IP address")
        ranks.append((_number(path, where, device, "rank_id"), _number(path, where, device, "device_id")))
    return ranks


def read_rank_table(path: str, devices: int) -> RankTable:
    """The rank table at `path`, which must list exactly `devices` NPUs of one server, ranks 0..devices-1."""
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise _bad(path, f"expected a readable JSON rank table ({error})") from None
    if not isinstance(table, dict):
        raise _bad(path, f"expected a JSON object, the file holds a {type(table).__name__}")
    version = table.get("version")
    if version not in VERSIONS:
        raise _bad(path, f"version = {version!r}: expected one of {', '.join(VERSIONS)}")
    if table.get("status") != "completed":
        raise _bad(path, f"status = {table.get('status')!r}: HCCL uses a table only when its status is \"completed\"")
    ranks = _devices(path, table, version)
    if len(ranks) != devices:
        raise _bad(path, f"lists {len(ranks)} NPUs but [npu] devices = {devices}; HCCL's world is the whole table, "
                         f"so its NPUs and the rank processes must be the same number")
    rank_ids = sorted(rank for rank, _ in ranks)
    if rank_ids != list(range(devices)):
        raise _bad(path, f"rank_id values are {rank_ids}: expected each of 0..{devices - 1} once")
    device_ids = [device for _, device in ranks]
    if len(set(device_ids)) != len(device_ids):
        raise _bad(path, f"device_id values {device_ids} repeat: each rank needs its own NPU")
    return RankTable(path=str(path), version=version, device_of_rank=tuple(device for _, device in sorted(ranks)))
