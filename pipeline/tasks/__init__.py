"""The Luigi tasks: `base` (lock, atomic parquet, task bases), `stage1` (raw data to TFRecords),
`stage2` (training and evaluation; the only module that imports din_model) and `all` (`AllTasks`).

Importing this package imports none of them, so stage 1 loads without stage 2.
"""
