"""Training one model: the compiled steps and their loss, the state, a run directory, evaluation.

- `steps`      the loss (written once), the compiled train and predict steps, several steps per call.
- `state`      model, optimizer and epoch counter, checkpointed together.
- `run_files`  a run directory's paths and its metrics.json.
- `policies`   `[train] xla` resolved, fixed-size batches or not.
- `evaluation` scoring a split, test metrics and their baselines.
- `optimizer`, `portable_weights`, `export`, `reporting`: Adam with the fused kernel, checkpoint names
  both stacks read, the SavedModel, curves.png and TensorBoard scalars.

How a process takes part in a run (`din_model.parallel`) and the loop over epochs (`din_model.run`)
build on this package; it imports neither.
"""
