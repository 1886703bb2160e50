"""Tests of the `pipeline` package (stage 1, the Luigi tasks and the command's output)."""
