"""The `luigi` command this process runs, read from its command line before Luigi parses it.

Whether this process is the `luigi` command (its console script or `python -m luigi`), whether it
asks for help, the task it names and every flag Luigi's parser will accept, from Luigi's public
task register (`Register.get_all_params`, `Register.get_task_cls`) the way Luigi builds its parser:
`--section-name` for every parameter of every registered task and config section (`--name` where
the class has no command-line section, Luigi's own `--workers`, `--help`), and `--name` for the
parameters of the command's task. And the line printed after the command's `--help`, naming the
listing of every setting (`python -m pipeline.cli.settings`).
"""
from __future__ import annotations

import atexit
import multiprocessing
import sys
from pathlib import Path

HELP_FLAGS = frozenset(("--help", "--help-all"))
SETTINGS_COMMAND = "python -m pipeline.cli.settings"  # lists every setting (pipeline/cli/settings.py)
HELP_POINTER = f"Every setting with its luigi.cfg key, default and allowed values: {SETTINGS_COMMAND}"


def is_luigi_command() -> bool:
    """Whether this process is the `luigi` command: its console script or `python -m luigi`.

    Not a process it spawned (a Luigi worker or a dask LocalCluster worker), which inherits the command's sys.argv.
    """
    if multiprocessing.current_process().name != "MainProcess":
        return False
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return program.name == "luigi" or (program.name == "__main__.py" and program.parent.name == "luigi")


def asks_for_help(argv: list[str]) -> bool:
    return bool(HELP_FLAGS.intersection(word.split("=", 1)[0] for word in argv))


def names_this_package(argv: list[str]) -> bool:
    """Whether `--module` names this package or one of its modules: then every task and setting the command
    can take is registered once `pipeline` is imported. Another module that imports `pipeline` may register
    more after it."""
    for index, word in enumerate(argv):
        module = argv[index + 1] if word == "--module" and index + 1 < len(argv) else (
            word[len("--module="):] if word.startswith("--module=") else None)
        if module is not None:
            return module == "pipeline" or module.startswith("pipeline.")
    return False


def dashed(name: str) -> str:
    return name.replace("_", "-")


def task_class_named_in(argv: list[str]):
    """The task class of the first word of `argv` that names a registered task, else None."""
    from luigi.task_register import Register, TaskClassException

    for word in argv:
        if word.startswith("-"):
            continue
        try:
            return Register.get_task_cls(word)
        except TaskClassException:
            continue
    return None


def known_flags(task_class=None) -> set[str]:
    """Every flag Luigi's parser accepts, with `task_class`'s own `--name` flags."""
    from luigi.task_register import Register

    flags = set()
    for family, without_section, name, _ in Register.get_all_params():
        flags.add("--" + dashed(name if without_section else f"{family}_{name}"))
    if task_class is not None:
        flags.update("--" + dashed(name) for name, _ in task_class.get_params())
    return flags


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def option_words(argv: list[str]) -> list[str]:
    """The options of `argv` as argparse sees them (the name before any `=`), up to a lone `--`: words
    starting with `-` except negative numbers, which argparse takes as values."""
    options = []
    for word in argv:
        if word == "--":
            break
        if word.startswith("-") and word != "-" and not _is_number(word):
            options.append(word.split("=", 1)[0])
    return options


def _print_help_pointer() -> None:
    print(f"\n{HELP_POINTER}", flush=True)


def install_help_pointer(argv: list[str]) -> None:
    """After Luigi's `--help` (argparse prints it and exits; Luigi offers no epilog), one line naming the
    listing of every setting. Luigi exits before running anything, so the line is printed at exit."""
    if asks_for_help(argv):
        atexit.register(_print_help_pointer)
