"""How one training process takes part in a run: alone, as a TF_CONFIG worker, or as one NPU rank.

- `placement`    the `Placement` interface and the helpers its implementations share.
- `single`       `SingleProcess`: alone on a CPU, GPU or NPU.
- `cluster`      `Cluster`: a worker of a MultiWorkerMirroredStrategy from TF_CONFIG; `cluster_join` waiting
                 for the other workers and stopping on SIGTERM.
- `npu_ranks`    `NpuRankPlacement` and the launcher of one rank process per NPU (`launch_ranks`).
- `choose`       which placement this process takes.
"""
