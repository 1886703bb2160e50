"""DIN pipeline: `luigi --module pipeline AllTasks` runs everything.

This package exposes every Luigi task so the `luigi` command finds them, and
installs the logging filter that turns a user mistake (`InputError`) into one
clear line instead of a traceback.
"""
from pipeline.cli_errors import install_error_reporting
from pipeline.tasks import AllTasks, BuildSequences, PrepareRaw, Preprocess, RemapIds, WriteTFRecords
from pipeline.train_tasks import EvaluateDIN, TrainDIN

install_error_reporting()
