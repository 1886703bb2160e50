"""Entry points and the loop over epochs: what runs a training process from start to end.

- `npu_rank` one NPU rank's process (`python -m din_model.run.npu_rank`).

It sits above `din_model.parallel` (the loop chooses a placement) and `din_model.train`.
"""
