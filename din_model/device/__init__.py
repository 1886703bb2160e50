"""Where training runs: device and precision selection, the Ascend NPU's options and checks, CPU kernels.

- `selection`   `select_device` (Ascend NPU, GPU, CPU; the NPU opened once per process), `configure_npu`.
- `npu_options` the `[npu]` settings (validated) and their mapping onto the Ascend adapter's options;
  `rank_table` the HCCL rank table of several NPUs.
- `npu_ops`     the op types the NPU path may use; `graph_ops` the op types of a traced function.
- `cpu_kernels` oneDNN on or off, per CPU and TF version; `quiet_start` importing TensorFlow without its
  start-up noise. Both run before TensorFlow loads, so this file imports nothing.
"""
