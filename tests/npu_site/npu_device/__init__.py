"""`import npu_device` for subprocesses of the tests: the stand-in adapter (tests/helpers/npu_standin.py).

Put `tests/npu_site` (and the repository root) on PYTHONPATH of a process and its
`import npu_device` gets a fresh `NpuStandin`'s modules. With NPU_STANDIN_RECORD=<prefix>
the calls it received are written to `<prefix>.<pid>.json` when the process exits, so a
test can check what each process (e.g. each NPU rank) asked of the adapter.
"""
import atexit
import json
import os
import sys

from tests.helpers.npu_standin import NpuStandin

RECORDED_ENVIRONMENT = ("RANK_SIZE", "RANK_ID", "ASCEND_DEVICE_ID", "HCCL_CONNECT_TIMEOUT", "DIN_HISTORY_CAPACITY")
_standin = NpuStandin(lasting=True)  # as_default() replaces for the process, as the real adapter does
sys.modules.update(_standin.modules)  # the import statement returns sys.modules["npu_device"]: the stand-in's


def _write_calls(prefix: str) -> None:
    with open(f"{prefix}.{os.getpid()}.json", "w") as handle:
        json.dump({"environment": {name: os.environ.get(name) for name in RECORDED_ENVIRONMENT},
                   "calls": _standin.calls}, handle, default=str)


if os.environ.get("NPU_STANDIN_RECORD"):
    atexit.register(_write_calls, os.environ["NPU_STANDIN_RECORD"])
