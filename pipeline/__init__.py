"""DIN pipeline: `luigi --module pipeline AllTasks` runs everything.

This package exposes every Luigi task so the `luigi` command finds them, and
installs what the command prints (pipeline.cli): one `ERROR:` line for a user
mistake instead of a traceback and the summary block at the end of a run.
"""
from pipeline import cli

cli.prefetch_raw_digests()  # first: its thread hashes the raw pickles while the tasks below import

from pipeline.tasks.all import AllTasks  # noqa: E402
from pipeline.tasks.stage1 import BuildSequences, PrepareRaw, Preprocess, RemapIds, WriteTFRecords  # noqa: E402
from pipeline.tasks.stage2 import EvaluateDIN, TrainDIN  # noqa: E402
from pipeline.tasks.tuning import TuneDIN  # noqa: E402

STAGE1_TASKS = (PrepareRaw, RemapIds, BuildSequences, WriteTFRecords, Preprocess)
PUBLIC_TASKS = (AllTasks, *STAGE1_TASKS, TrainDIN, EvaluateDIN, TuneDIN)

cli.install([task.get_task_family() for task in PUBLIC_TASKS], [task.get_task_family() for task in STAGE1_TASKS])
