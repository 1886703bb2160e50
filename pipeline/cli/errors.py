"""User-facing error reporting for the `luigi` command and the standalone tools.

A user mistake ends a `luigi --module pipeline ...` run with one `ERROR:` line and a
documented exit code (luigi.cfg `[retcode]`), never with a traceback:
- a `ReportedError` raised while Luigi schedules or runs a task: an `InputError` (bad
  file, column, row or setting) or a `RunFailed` (the loss diverged, an NPU rank
  crashed). Luigi logs it with its traceback, often as a WARNING; a logging filter on
  Luigi's logger turns that record into the message alone, as an ERROR. Exit 35 when
  it happened while scheduling (settings, raw data checks), 30 when a task's run failed.
- a setting Luigi cannot parse (`--preprocess-maxlen abc`): same filter, the line
  names the setting, the value and the expected type. Exit 35.
- an unknown task name (`AllTask`): Luigi raises it before it runs anything, so it
  reaches `sys.excepthook`; ours prints the closest task names. Exit 35.
- an unknown option (`--train-epohcs 3`): checked against the flags Luigi's parser accepts
  (pipeline.cli.command) when `--module pipeline` is imported, before Luigi parses the command
  line; the line names the closest flags (the same difflib match as task names). Exit 2.
- a task parameter missing or unparsable on the command line (`BuildSequences` without
  `--shard`, `--shard abc`): Luigi cannot build the task and logs "Uncaught exception";
  the filter names the parameter, found by parsing each flag of the command's task with
  its own parameter (public `Register.get_task_cls`, `get_params`, `Parameter.parse`).
  Exit 40 (Luigi's code for it).
- Ctrl-C (SIGINT): Luigi lets the KeyboardInterrupt through to the top, where the same hook prints
  one line, the training run's `Interrupted` message ("interrupted after epoch 2; rerun the same
  command to resume") or a general one, and exits 130 (128 + SIGINT, what a shell reports).
Tracebacks stay for every other exception (bugs), and for these too when the log
level is DEBUG (`luigi --log-level DEBUG ...`).
"""
from __future__ import annotations

import difflib
import logging
import os
import re
import sys

from din_common.errors import InputError, Interrupted, ReportedError, RunFailed
from pipeline.cli.command import (SETTINGS_COMMAND, asks_for_help, known_flags, names_this_package, option_words,
                                  task_class_named_in)

LUIGI_LOGGER = "luigi-interface"
SCHEDULING_ERROR_EXIT = 35  # luigi.cfg [retcode] scheduling_error; the fallback when no config is readable
COMMAND_LINE_ERROR_EXIT = 2  # argparse's code for a command line it refuses (README, Troubleshooting)
INTERRUPTED_EXIT = 128 + 2  # 128 + SIGINT
INTERRUPTED = ("interrupted; rerun the same command to go on (the tasks that finished are kept, a partly "
               "trained run resumes from its last checkpoint)")

# How a traceback names the reported errors: "din_common.errors.InputError: <message>".
_FORMATTED_REPORTED_ERROR = re.compile("|".join(re.escape(f"{kind.__module__}.{kind.__qualname__}: ")
                                                for kind in (InputError, RunFailed)))
# What Luigi says when a config value does not parse, e.g.
# "preprocess[args=(), kwargs={}]: Error when parsing the default value of 'maxlen'".
_UNPARSABLE_SETTING = re.compile(r"(\w+)\[args=.*?\]: Error when parsing the default value of '(\w+)'")
# The parser's own complaint, chained before it: "ValueError: invalid literal for int() with base 10: 'abc'".
_PARSE_CAUSE = re.compile(r"^\w*Error: (.+)$", re.MULTILINE)


def _debugging() -> bool:
    return logging.getLogger(LUIGI_LOGGER).isEnabledFor(logging.DEBUG)


def command_line_flag(name: str, section: str = "") -> str:
    """`--preprocess-maxlen` for a config setting, `--shard` for a task parameter."""
    return "--" + (f"{section}-" if section else "") + name.replace("_", "-")


def unparsable_setting_message(text: str) -> str | None:
    """One line for Luigi's "Error when parsing the default value" in `text` (a message or traceback)."""
    match = _UNPARSABLE_SETTING.search(text)
    if not match:
        return None
    section, name = match.groups()
    causes = [cause for cause in _PARSE_CAUSE.findall(text) if not _UNPARSABLE_SETTING.search(cause)]
    reason = f": {causes[0]}" if causes else ""
    return (f"[{section}] {name} has a value Luigi cannot parse{reason} "
            f"(set it in luigi.cfg or with {command_line_flag(name, section)})")


def _as_error(record: logging.LogRecord, message: str) -> None:
    record.msg, record.args = "%s", (message,)
    record.exc_info, record.exc_text = None, None
    record.levelno, record.levelname = logging.ERROR, "ERROR"


class InputErrorFilter(logging.Filter):
    """Turns Luigi's log record of a user mistake into one ERROR line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _debugging():
            return True
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ReportedError):
            _as_error(record, error.message)
            return True
        task_parameter = task_parameter_message(error, sys.argv[1:]) if error is not None else None
        if task_parameter:
            _as_error(record, task_parameter)
            return True
        text = record.getMessage() if isinstance(record.msg, str) else ""
        if error is not None:
            text += "\n" + "\n".join(f"{type(e).__name__}: {e}" for e in _exception_chain(error))
        formatted = list(_FORMATTED_REPORTED_ERROR.finditer(text))
        if formatted:
            # Errors in complete()/requires() reach the log as an already formatted traceback.
            _as_error(record, text[formatted[-1].end():].strip())
        else:
            unparsable = unparsable_setting_message(text)
            if unparsable:
                _as_error(record, unparsable)
        return True


def task_parameter_message(error: BaseException, argv: list[str]) -> str | None:
    """One line for a task parameter Luigi could not take from the command line `argv`, else None."""
    from luigi.parameter import MissingParameterException

    if isinstance(error, MissingParameterException):
        # "BuildSequences[args=(), kwargs={}]: requires the 'shard' parameter to be set"
        match = re.match(r"(\w+)\[.*\]: requires the '(\w+)' parameter", str(error))
        if match:
            task, name = match.groups()
            return f"{task} needs its {name} parameter: add {command_line_flag(name)} VALUE"
        return str(error)
    if isinstance(error, ValueError):
        flag = unparsable_task_flag(argv)
        if flag:
            return f"{flag} has a value Luigi cannot parse: {error}"
    return None


def unparsable_task_flag(argv: list[str]) -> str | None:
    """The first flag of the command's task (`--shard`, or `--BuildSequences-shard`) whose value its
    parameter cannot parse, else None. The task is the first word of `argv` that names one."""
    task_class = task_class_named_in(argv)
    if task_class is None:
        return None
    for name, parameter in task_class.get_params():
        for flag in (command_line_flag(name), command_line_flag(name, task_class.get_task_family())):
            value = _flag_value(argv, flag)
            if value is None:
                continue
            try:
                parameter.parse(value)
            except (ValueError, TypeError):
                return flag
    return None


def _flag_value(argv: list[str], flag: str) -> str | None:
    """The value given to `flag` in `argv` (`--flag VALUE` or `--flag=VALUE`), else None."""
    for index, word in enumerate(argv):
        if word == flag and index + 1 < len(argv):
            return argv[index + 1]
        if word.startswith(flag + "="):
            return word[len(flag) + 1:]
    return None


def _exception_chain(error: BaseException) -> list[BaseException]:
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def did_you_mean(name: str, known: list[str]) -> str:
    """`did you mean A or B?` naming the known names closest to `name` (difflib, up to three, those nearly as
    close as the closest), or ""."""
    scored = [(difflib.SequenceMatcher(None, name, candidate).ratio(), candidate)
              for candidate in difflib.get_close_matches(name, known, n=3, cutoff=0.5)]
    closest = [candidate for score, candidate in scored if score >= scored[0][0] - 0.1]
    return f"did you mean {' or '.join(closest)}?" if closest else ""


def unknown_task_message(name: str, task_names: list[str], module: str = "pipeline") -> str:
    hint = did_you_mean(name, task_names)
    return f"no task named {name!r} in --module {module}; {hint + ' ' if hint else ''}(tasks: {', '.join(task_names)})"


def unknown_option_message(argv: list[str], known: set[str]) -> str | None:
    """One line for the options of `argv` that Luigi's parser would refuse, else None. argparse takes a unique
    prefix of a flag (`--train-epoch`), refuses a word that starts no flag and one that starts several."""
    problems = []
    for option in option_words(argv):
        if option in known:
            continue
        starting = sorted(flag for flag in known if flag.startswith(option))
        if not starting:
            hint = did_you_mean(option, sorted(known))
            problems.append(f"unknown option {option}" + (f"; {hint}" if hint else ""))
        elif len(starting) > 1:
            problems.append(f"ambiguous option {option}: {' or '.join(starting[:3])}"
                            + (", ..." if len(starting) > 3 else ""))
    if not problems:
        return None
    return "; ".join(problems) + f" (every setting: {SETTINGS_COMMAND})"


def _exit_code(name: str, fallback: int) -> int:
    try:
        from luigi.retcodes import retcode

        return int(getattr(retcode(), name))
    except Exception:  # a broken luigi.cfg must not hide the error we are reporting
        return fallback


def _install_excepthook(task_names: list[str]) -> None:
    from luigi.task_register import TaskClassNotFoundException

    previous = sys.excepthook

    def report_unknown_task_or_interrupt(kind, error, tb):
        if _debugging():
            previous(kind, error, tb)
        elif isinstance(error, KeyboardInterrupt):
            _exit_with_line(str(error) if isinstance(error, Interrupted) else INTERRUPTED, INTERRUPTED_EXIT)
        elif isinstance(error, TaskClassNotFoundException):
            match = re.match(r"No task (.+?)\. (?:Did you mean|Candidates are)", str(error))
            name = match.group(1) if match else str(error)
            _exit_with_line(f"ERROR: {unknown_task_message(name, task_names)}",
                            _exit_code("scheduling_error", SCHEDULING_ERROR_EXIT))
        else:
            previous(kind, error, tb)

    if getattr(previous, "__name__", "") != report_unknown_task_or_interrupt.__name__:
        sys.excepthook = report_unknown_task_or_interrupt


def _exit_with_line(line: str, code: int) -> None:
    """Print `line` to stderr and end the process with `code`: an excepthook cannot choose the exit status (the
    interpreter exits with 1 after it, or kills itself with SIGINT after a KeyboardInterrupt); the tasks'
    locks and temporaries were released by the `finally` blocks the exception went through."""
    sys.stdout.flush()
    print(line, file=sys.stderr, flush=True)
    os._exit(code)


def refuse_unknown_options(argv: list[str]) -> None:
    """Before Luigi parses the command line `argv` of the `luigi` command: an option its parser would refuse
    (argparse's usage line and "unrecognized arguments") is one ERROR line naming the closest flags, exit 2
    as argparse's. Left to Luigi: a command asking for --help, naming no known task (Luigi says which), or
    loading another module (`--module mine`), whose tasks and settings are not all registered yet."""
    if asks_for_help(argv) or not names_this_package(argv):
        return
    task_class = task_class_named_in(argv)
    if task_class is None:
        return
    message = unknown_option_message(argv, known_flags(task_class))
    if message:
        sys.stdout.flush()
        print(f"ERROR: {message}", file=sys.stderr, flush=True)
        sys.exit(COMMAND_LINE_ERROR_EXIT)


def install_error_reporting(task_names: list[str] | None = None) -> None:
    """The logging filter, and (given the public task names) the unknown-task hook."""
    logger = logging.getLogger(LUIGI_LOGGER)
    if not any(isinstance(f, InputErrorFilter) for f in logger.filters):
        logger.addFilter(InputErrorFilter())
    if task_names:
        _install_excepthook(sorted(task_names))
