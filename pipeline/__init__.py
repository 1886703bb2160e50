"""DIN pipeline: `luigi --module pipeline AllTasks` runs everything.

This package exposes every Luigi task so the `luigi` command finds them, and
installs what the command prints (pipeline.cli): one `ERROR:` line for a user
mistake instead of a traceback and the summary block at the end of a run.
"""
from pipeline import cli
from pipeline.tasks.all import AllTasks
from pipeline.tasks.stage1 import BuildSequences, PrepareRaw, Preprocess, RemapIds, WriteTFRecords
from pipeline.tasks.stage2 import EvaluateDIN, TrainDIN
from pipeline.tasks.tuning import TuneDIN

STAGE1_TASKS = (PrepareRaw, RemapIds, BuildSequences, WriteTFRecords, Preprocess)
PUBLIC_TASKS = (AllTasks, *STAGE1_TASKS, TrainDIN, EvaluateDIN, TuneDIN)

cli.install([task.get_task_family() for task in PUBLIC_TASKS], [task.get_task_family() for task in STAGE1_TASKS])
