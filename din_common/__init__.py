"""Pieces both stages use and that must not pull in Luigi or TensorFlow:
the one-line error types, atomic file output, the metrics (numpy) and fault injection for the
kill tests."""
