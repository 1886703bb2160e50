"""Which `Placement` this process takes: a TF_CONFIG cluster's worker, one NPU rank of several, or alone.

`choose_placement` runs first in a training process (a cluster's strategy must exist before
any other TensorFlow op); `placement_on` revisits the choice once the device is open, since
only the opened NPU tells whether it is one rank of several.
"""
from __future__ import annotations

from pathlib import Path

from din_model.device.selection import DeviceChoice
from din_model.params import TrainParams
from din_model.parallel import cluster, npu_ranks
from din_model.parallel.placement import Placement
from din_model.parallel.single import SingleProcess


def choose_placement(params: TrainParams, run_dir: Path, worker_timeout: float) -> Placement:
    """A TF_CONFIG cluster's worker, if TF_CONFIG names several (first: it must set up collective
    ops before any other TensorFlow op; the workers meet in `<runs>/.cluster/`), else alone."""
    worker = cluster.start_from_environment(params.device, rendezvous_dir=Path(run_dir).parent / ".cluster",
                                            worker_timeout=worker_timeout)
    return worker if worker is not None else SingleProcess()


def placement_on(device: DeviceChoice, placement: Placement) -> Placement:
    """NPU ranks instead of a single process when the opened NPU is one rank of several."""
    if placement.processes == 1 and device.name == "npu":
        return npu_ranks.placement_for(device) or placement
    return placement
