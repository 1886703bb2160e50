"""TensorFlow's start-up without the lines a user would take for a failure.

On a machine without a GPU, TensorFlow 2.16+ writes about eight lines to stderr while
it starts: absl's "All log messages before absl::InitializeLog() is called ...",
oneDNN and CUDA-stub notes, and `E0000 ... failed call to cuInit: ... UNKNOWN ERROR
(303)`. absl writes them before TensorFlow reads `TF_CPP_MIN_LOG_LEVEL`, so that
setting cannot hide them. `import_tensorflow()` imports TensorFlow and lets it probe
its devices (where cuInit happens) while the process' stderr (file descriptor 2, the
one C++ writes to) goes to a temporary file, then writes back every line that is not
one of those known start-up notes. TensorFlow 2.6.5 (the Ascend stack) honours
`TF_CPP_MIN_LOG_LEVEL` and prints none of them; the filter passes its lines through.

A user who sets `TF_CPP_MIN_LOG_LEVEL` themselves gets TensorFlow's output unfiltered.

Either way the Python root logger gets a `NullHandler` if it has none: absl (which TensorFlow's checkpoint
and SavedModel code log through) calls `logging.basicConfig()` on its first message when the root logger
has no handler, and from then on every record that reaches the root, the `luigi` command's one `ERROR:`
line included, would be printed a second time in Python's default format. absl's notes stay unprinted,
as they were before their first one.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import tempfile

import din_model

# Start-up notes, not failures: absl's pre-init banner, INFO/WARNING lines in absl's
# format (`I0000 00:00:...`), the CUDA probe failing on a machine without a GPU, and
# CUDA plugin factories registered twice.
START_UP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} \d\d:\d\d:\S+ +\d+ \S+:\d+\] .*"
    r"|E\d{4} .*(failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) factory).*)$")


def filtered(text: str) -> str:
    """`text` without its start-up noise lines."""
    return "".join(line for line in text.splitlines(keepends=True) if not START_UP_NOISE.match(line.rstrip("\n")))


def import_tensorflow():
    """`import tensorflow` (and its device probe) with the start-up noise filtered out."""
    if not logging.getLogger().handlers:
        logging.getLogger().addHandler(logging.NullHandler())
    if "tensorflow" in sys.modules or din_model.USER_SET_TF_LOG_LEVEL:
        import tensorflow
        return tensorflow
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
            tensorflow.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
            captured.seek(0)
            sys.stderr.write(filtered(captured.read().decode("utf-8", "replace")))
            sys.stderr.flush()
    return tensorflow
