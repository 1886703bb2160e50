"""The `luigi` command's first step: digest the raw pickles while the tasks import.

Luigi's first completeness check needs the digest of raw/reviews.pkl and raw/meta.pkl (the raw
fingerprint, or the integrity check of pickles the pipeline made), ~0.1 s at full scale, and
until then the command only imports. pipeline/__init__.py calls `prefetch_raw_digests` before it
imports the tasks: the data dir comes from the command line or luigi.cfg as Luigi will read them,
and `pipeline.fingerprint.prefetch_digests` hashes both files in a thread meanwhile (hashlib
releases the GIL). A wrong guess of the data dir costs only that thread's work: the checks
digest whatever files they name themselves.
"""
from __future__ import annotations

import os
import sys

DATA_DIR_FLAG = "--paths-data-dir"


def data_dir_of(argv: list[str]) -> str:
    """`[paths] data_dir` as the command line (the last `--paths-data-dir`) or the Luigi config give it."""
    import luigi

    value = luigi.configuration.get_config().get("paths", "data_dir", "data")
    for index, word in enumerate(argv):
        if word == DATA_DIR_FLAG and index + 1 < len(argv):
            value = argv[index + 1]
        elif word.startswith(DATA_DIR_FLAG + "="):
            value = word[len(DATA_DIR_FLAG) + 1:]
    return value


def prefetch_raw_digests() -> None:
    """In the `luigi` command of this package, start digesting the data dir's raw pickles."""
    from pipeline.cli.command import is_luigi_command, names_this_package

    argv = sys.argv[1:]
    if not (is_luigi_command() and names_this_package(argv)):
        return
    from pipeline.fingerprint import prefetch_digests

    raw_dir = os.path.join(data_dir_of(argv), "raw")
    prefetch_digests([os.path.join(raw_dir, "reviews.pkl"), os.path.join(raw_dir, "meta.pkl")])
