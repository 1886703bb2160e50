"""The entry point of one NPU rank process: `python -m din_model.run.npu_rank SPEC RUN_DIR PARAMS_JSON NPU_JSON`.

`din_model.parallel.npu_ranks.launch_ranks` starts one per NPU with the rank's environment
(RANK_SIZE, RANK_ID, RANK_TABLE_FILE, ASCEND_DEVICE_ID). The rank opens its NPU with the
`[npu]` settings, then runs the one training loop, which finds itself a rank of several
(`NpuRankPlacement`). A reported error (bad input, a failed run) is one `ERROR:` line and exit code 30.
"""
from __future__ import annotations

import json
import os
import sys

from din_common.errors import ReportedError
from din_model.device.selection import configure_npu
from din_model.device.npu_options import NpuOptions
from din_model.params import TrainParams
from din_model.run.loop import train


def main(argv=None) -> int:
    """One rank (launch_ranks runs it). The parameters go through `TrainParams.from_dict`, which refuses
    unknown settings, so a launcher and rank of different versions fail with one clear line."""
    spec_path, run_dir, params_json, settings_json = (argv or sys.argv[1:])[:4]
    settings = json.loads(settings_json)
    try:
        params = TrainParams.from_dict(json.loads(params_json))
        configure_npu(NpuOptions(**settings).for_rank(int(os.environ["ASCEND_DEVICE_ID"])))
        train(spec_path, run_dir, params)
    except ReportedError as error:
        print(f"ERROR: {error}", file=sys.stderr, flush=True)
        return 30
    return 0


if __name__ == "__main__":
    sys.exit(main())
