"""The loop over epochs and the processes' entry points.

- `loop`      `train` (and the run directory contract: metrics.json, checkpoints, resume, SavedModel);
              `evaluate` of din_model/train/evaluation.py, for the Luigi tasks.
- `npu_rank`  one NPU rank's process (`python -m din_model.run.npu_rank`, started by `launch_ranks`).
- `npu_check` the first-host check of an Ascend NPU (`python -m pipeline.cli.npu_check`).

It sits above `din_model.parallel` (the loop chooses a placement) and `din_model.train`: were the loop
in `train`, the packages `train` and `parallel` would import each other.
"""
