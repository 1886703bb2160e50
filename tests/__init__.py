"""Tests. Importing din_model first gives each test process the TensorFlow environment
(log level, oneDNN kernels) that users' processes get."""
import din_model  # noqa: F401
