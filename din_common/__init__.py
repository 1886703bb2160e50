"""Pieces both stages use and that must not pull in Luigi or TensorFlow:
the user-error type, atomic file output and fault injection for the kill tests."""
