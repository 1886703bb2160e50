"""Stage 2 of the pipeline: the Deep Interest Network (DIN) on pre-batched TFRecord shards.

Packages by role, each importing only those listed before it (and din_common, never pipeline or Luigi):
- `compat`, `params`  the TF 2.6 / Keras 2 vs TF 2.21 / Keras 3 differences; TrainParams (the `[train]`
                      settings, validated, with DEVICES and PRECISIONS) and `run_id`.
- `device/`    device and precision selection, the `[npu]` options, rank tables, NPU op checks, CPU kernels.
- `data/`      the tf.data reader of the shards a `din_common.feature_spec.FeatureSpec` lists.
- `model/`     the DIN network, its layers, history layouts and the static layout's capacity.
- `train/`     the loss (once) and compiled steps, the training state, run files, policies, evaluation,
               optimizer, export, reporting.
- `parallel/`  how a process takes part in a run: the `Placement` interface, `SingleProcess`, a TF_CONFIG
               `Cluster`, NPU ranks and their launcher.
- `run/`       the loop over epochs (`run.loop.train`) and the entry points (`python -m din_model.run.npu_rank`,
               `python -m pipeline.cli.npu_check`).

This package file imports nothing heavy: `import din_model.params` does not load TensorFlow.
The metrics (AUC, GAUC, logloss, the popularity baseline) are numpy-only, in `din_common.metrics`.
"""

import os

from din_model.device import cpu_kernels

# TensorFlow's C++ start-up chatter (CUDA probing, CPU feature notes) is noise for users
# of a CPU machine; errors still show. Set before any module here imports TensorFlow.
# A user's own setting wins, and also turns off the start-up filter of `quiet_start`.
USER_SET_TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN kernels only where measured to help and known safe (cpu_kernels: never on TensorFlow < 2.9,
# whose oneDNN crashes CPUs without AVX-512). Decided before TensorFlow is imported.
cpu_kernels.apply()
