"""Stage 1 on a Dask cluster (`[preprocess] engine = dask`): the same outputs as the local engine, byte for byte.

- `cluster`: the Client of `[dask]` (a LocalCluster for the task, or an existing scheduler).
- `remap`: RemapIds as per-partition work; only the distinct keys meet in the task's process.
- `shards`: BuildSequences / WriteTFRecords, every pending shard at once on the workers.
Every step calls the pure functions the local engine calls (pipeline.remap, pipeline.tasks.shard_steps).
Importing this package does not import dask; its modules do.
"""
