"""Reading pickles nobody vouches for: the one way in is `load(path, job)` (see docs/security.md).

- `sandbox`: the parent and the child process that can only compute (layer 1);
- `confine`: the one-way steps the child takes before it reads a byte (rlimits, Landlock, seccomp);
- `unpickler`: the pure-Python unpickler with the exact allow-list (layer 2);
- `allowlist`, `checks`: what a pickle may name and build, and the states numpy and pandas trust.
- `files`: `open_pickle`, for the sandbox's parent and the unpickler alike (imports nothing heavy).
Light on purpose: the sandbox child imports this package before its own module, so it holds
only the entry points, which import the sandbox when called, and `SandboxJob` (from `job`).
"""
from __future__ import annotations

import os

from pipeline.untrusted.job import SandboxJob  # noqa: F401  (the type raw/ declares its jobs with)


def load(path: str | os.PathLike, job: SandboxJob):
    """Load `path` in the sandbox; returns ({frame name: DataFrame}, info) as `job` declares."""
    from pipeline.untrusted import sandbox

    return sandbox.load(path, job)


def load_many(requests: list[tuple[str | os.PathLike, SandboxJob]]):
    """Load several files at once: one child imports once and forks a confined worker per file."""
    from pipeline.untrusted import sandbox

    return sandbox.load_many(requests)
