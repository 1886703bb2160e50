"""DIN pipeline: `luigi --module pipeline AllTasks` runs everything.

This package exposes every Luigi task so the `luigi` command finds them, and
installs what the command prints: one `ERROR:` line for a user mistake instead
of a traceback (pipeline.cli_errors) and the summary block at the end of a run
(pipeline.console).
"""
from pipeline.cli_errors import install_error_reporting
from pipeline.console import install_run_summary
from pipeline.tasks import AllTasks, BuildSequences, PrepareRaw, Preprocess, RemapIds, WriteTFRecords
from pipeline.train_tasks import EvaluateDIN, TrainDIN, separate_process_locks_for_cluster_workers

PUBLIC_TASKS = (AllTasks, PrepareRaw, RemapIds, BuildSequences, WriteTFRecords, Preprocess, TrainDIN, EvaluateDIN)

install_error_reporting([task.get_task_family() for task in PUBLIC_TASKS])
install_run_summary()
separate_process_locks_for_cluster_workers()
