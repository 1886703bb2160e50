"""Luigi's process lock for TF_CONFIG clusters: one lock directory per worker.

Luigi turns away a second process running the same command line ("already running");
the workers of one cluster that share a host run the same command line.
"""
from __future__ import annotations

import os
import tempfile

import luigi

from din_common import tf_config


def separate_process_locks_for_cluster_workers() -> None:
    """Give each TF_CONFIG worker its own Luigi process-lock directory, unless luigi.cfg names one."""
    worker = tf_config.worker_name()
    settings = luigi.configuration.get_config()
    if worker and not settings.has_option("core", "lock_pid_dir"):
        settings.set("core", "lock_pid_dir", os.path.join(tempfile.gettempdir(), "luigi", worker))
