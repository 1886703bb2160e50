"""Tests of the `din_model` package (stage 2: model, reader, training, devices, NPU ranks)."""
