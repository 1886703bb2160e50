"""BuildSequences / WriteTFRecords on a Dask cluster: every pending shard of the stage at once.

Luigi keeps one task per shard (their manifests and rerun logic are unchanged); with
the dask engine the first shard task of a stage to run submits every shard that is
not yet complete to the cluster, one shard step (pipeline.tasks.shard_steps) per
worker task, so the shards run in parallel and the later shard tasks find their
outputs current. Each step writes its files atomically and its manifest last, as locally.
"""
from __future__ import annotations

from typing import Callable

from pipeline.dask_engine.cluster import cluster_client
from pipeline.settings import Settings


def run_shard_steps(settings: Settings, step: Callable, shards: list[int], fingerprint: str) -> list[dict]:
    """`step(settings, shard, fingerprint)` for each shard on the cluster; returns their manifests in order."""
    with cluster_client(settings.dask) as client:
        futures = [client.submit(step, settings, shard, fingerprint, pure=False) for shard in shards]
        return client.gather(futures)
