"""The sandbox jobs of the raw input by name: what the sandbox child imports (`SandboxJob.module`).

The child of `pipeline.untrusted.sandbox` imports this module and looks a job up in
`SANDBOX_JOBS`; each job is defined next to its check (`pipeline.raw.pickles`,
`pipeline.raw.remap_pickle`). The Amazon JSON reader runs no pickle, so it is not imported here.
"""
from __future__ import annotations

from pipeline.raw.pickles import META_JOB, REVIEWS_JOB
from pipeline.raw.remap_pickle import REMAP_JOB

SANDBOX_JOBS = {job.name: job for job in (REVIEWS_JOB, META_JOB, REMAP_JOB)}
