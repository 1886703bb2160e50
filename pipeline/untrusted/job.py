"""`SandboxJob`: what one kind of untrusted pickle must hold, and how the sandbox child checks it.

Its own module so that the sandbox and the package's entry points both import it without importing
each other.
"""
from __future__ import annotations

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
