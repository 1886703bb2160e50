"""What the `luigi --module pipeline ...` command adds to Luigi: one `ERROR:` line per user
mistake (cli.errors; an unknown option is refused before Luigi parses the command line), the
summary block at the end of a run (cli.summary), one worker per core for stage 1 (cli.workers), a line after `--help` pointing to the listing
of every setting (cli.command; the listing: cli.settings) and a process-lock directory per
TF_CONFIG worker (cli.process_lock).

`prefetch_raw_digests()` (cli.prefetch), called before the tasks import, starts hashing the raw
pickles in a thread for the first completeness check. `import pipeline` leaves pandas out; the
command imports it once its first task process is forked, for the task processes that follow
(cli.preload).

`install()` only registers, through Luigi's public interfaces: the summary's event handlers
(`luigi.Task.event_handler`), a filter on Luigi's logger, the unknown-task `sys.excepthook` and
`[core] lock_pid_dir` and `[core] workers` settings (`luigi.configuration.get_config().set`); in the `luigi` command
also an `atexit` line after `--help` and, with `os.register_at_fork`, the pandas import after
Luigi's first fork of a task process (cli.preload, which takes `luigi.worker.fork_lock` for it).
It assigns no Luigi attribute. The one thing it does itself: in the `luigi` command, a command line holding an option Luigi's parser would refuse
stops here (exit 2), before Luigi parses it (`Register.get_all_params` names the flags).
pipeline/__init__.py calls it: importing the module named by `--module` is the one place the
`luigi` command lets a project hook in.
"""
from __future__ import annotations


def install(task_names: list[str], parallel_task_names: list[str] = ()) -> None:
    """Check the `luigi` command's options; register the error reporting, the run summary, the pointer
    after `--help`, the cluster workers' process locks and the workers.

    parallel_task_names: the tasks whose command runs one worker per usable core by default.
    """
    import sys

    from pipeline.cli.command import install_help_pointer, is_luigi_command
    from pipeline.cli.errors import install_error_reporting, refuse_unknown_options
    from pipeline.cli.preload import preload_after_first_task_process
    from pipeline.cli.process_lock import separate_process_locks_for_cluster_workers
    from pipeline.cli.summary import install_run_summary
    from pipeline.cli.workers import default_workers_to_cores

    install_error_reporting(task_names)
    if is_luigi_command():
        refuse_unknown_options(sys.argv[1:])
        install_help_pointer(sys.argv[1:])
    install_run_summary()
    separate_process_locks_for_cluster_workers()
    default_workers_to_cores(is_luigi_command(), sys.argv[1:], task_names, list(parallel_task_names))
    if is_luigi_command():
        preload_after_first_task_process()


def prefetch_raw_digests() -> None:
    """In the `luigi` command, start digesting the raw pickles in a thread (cli.prefetch)."""
    from pipeline.cli.prefetch import prefetch_raw_digests as start

    start()
