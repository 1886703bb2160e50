"""Stage 2 of the pipeline: the Deep Interest Network (DIN) on pre-batched TFRecord shards.

Modules (importable without Luigi):
- `params`   TrainParams (the `[train]` settings, validated) and `run_id`.
- `reader`   tf.data reader of the shards described by `feature_spec.json`.
- `layers`   Dice, PReLU, the dense stack and the DIN attention pooling.
- `model`    the DIN model builder and its history layouts (dense, compact, static capacity).
- `segments` row operations of the compact layouts; `history_capacity` the static layout's buffer size;
  `recompute` the static layout's rare dense fallback, computed (and recomputed for its gradient) only when needed.
- `device`   device (Ascend NPU, GPU, CPU) and precision selection; the NPU opened once per process.
- `npu_options` the `[npu]` settings (validated) and their mapping onto the Ascend adapter's options.
- `npu_ops`  the op types the NPU path may use (from Huawei's published support lists); `graph_ops` the op
  types of a traced function; `npu_check` the first-host check (`python -m din_model.npu_check`).
- `optimizer` Adam with the fused update kernel.
- `training` train / evaluate loops, checkpoints, resume; `placement` and `run_state` what a process
  trains on and the compiled steps (several per call), `[train] xla` resolved.
- `reporting` what a run reports: curves.png, TensorBoard scalars.
- `quiet_start` importing TensorFlow without its start-up noise; `cpu_kernels` oneDNN on or off, per CPU and TF version.
- `export`   SavedModel with the `serving_default` / `score` signatures.

This package file imports nothing heavy: `import din_model.params` does not load TensorFlow.
The metrics (AUC, GAUC, logloss, the popularity baseline) are numpy-only, in `din_common.metrics`.
"""

import os

from din_model import cpu_kernels

# TensorFlow's C++ start-up chatter (CUDA probing, CPU feature notes) is noise for users
# of a CPU machine; errors still show. Set before any module here imports TensorFlow.
# A user's own setting wins, and also turns off the start-up filter of `quiet_start`.
USER_SET_TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN kernels only where measured to help and known safe (cpu_kernels: never on TensorFlow < 2.9,
# whose oneDNN crashes CPUs without AVX-512). Decided before TensorFlow is imported.
cpu_kernels.apply()
