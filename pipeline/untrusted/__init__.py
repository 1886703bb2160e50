"""Reading pickles nobody vouches for: the one way in is `load(path, job)` (see docs/security.md).

- `sandbox`: the parent and the child process that can only compute (layer 1);
- `confine`: the one-way steps the child takes before it reads a byte (rlimits, Landlock, seccomp);
- `unpickler`: the pure-Python unpickler with the exact allow-list (layer 2);
- `allowlist`, `checks`: what a pickle may name and build, and the states numpy and pandas trust.
Light on purpose: the sandbox child imports this package before its own module, so it holds
only `SandboxJob` and the entry points, which import the sandbox when called.
"""
from __future__ import annotations

import os
from typing import Callable, NamedTuple


class SandboxJob(NamedTuple):
    """What one kind of pickle must hold and how the child checks it."""

    name: str  # key in `<module>.SANDBOX_JOBS`
    module: str  # the module the child imports to find this job
    check: Callable[[list, str], tuple[dict, dict]]  # (objects, file name) -> (frames, info), in the child
    sample: Callable[[], list[list]]  # valid object lists, to warm the child up before it is confined
    n_objects: int
    expected: str
    frames: dict[str, dict[str, str]]  # frame name -> {column: "str" | "int64"}
    info_keys: tuple[str, ...]


def load(path: str | os.PathLike, job: SandboxJob):
    """Load `path` in the sandbox; returns ({frame name: DataFrame}, info) as `job` declares."""
    from pipeline.untrusted import sandbox

    return sandbox.load(path, job)


def load_many(requests: list[tuple[str | os.PathLike, SandboxJob]]):
    """Load several files at once: one child imports once and forks a confined worker per file."""
    from pipeline.untrusted import sandbox

    return sandbox.load_many(requests)
