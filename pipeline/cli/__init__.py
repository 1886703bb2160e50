"""What the `luigi --module pipeline ...` command adds to Luigi: one `ERROR:` line per user
mistake (cli.errors), the summary block at the end of a run (cli.summary) and a process-lock
directory per TF_CONFIG worker (cli.process_lock).

`install()` only registers, through Luigi's public interfaces: the summary's event handlers
(`luigi.Task.event_handler`), a filter on Luigi's logger, the unknown-task `sys.excepthook` and
a `[core] lock_pid_dir` setting (`luigi.configuration.get_config().set`). It assigns no Luigi
attribute. pipeline/__init__.py calls it: importing the module named by `--module` is the one
place the `luigi` command lets a project hook in.
"""
from __future__ import annotations


def install(task_names: list[str]) -> None:
    """Register the error reporting, the run summary and the cluster workers' process locks."""
    from pipeline.cli.errors import install_error_reporting
    from pipeline.cli.process_lock import separate_process_locks_for_cluster_workers
    from pipeline.cli.summary import install_run_summary

    install_error_reporting(task_names)
    install_run_summary()
    separate_process_locks_for_cluster_workers()
