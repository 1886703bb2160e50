"""What a user finds on the real `luigi --module pipeline ...` command line: `--help` lists every
setting and points to `python -m pipeline.cli.settings`, which prints each with its luigi.cfg key,
default, flag, meaning and allowed values; an unknown or ambiguous option is one ERROR line naming
the closest flags, exit 2, before anything runs."""
from __future__ import annotations

import configparser
import importlib
import os
import re
import subprocess
import sys

import pytest

from pipeline import config
from pipeline.cli import errors as cli_errors
from pipeline.cli.command import HELP_POINTER, known_flags, names_this_package
from pipeline.cli.errors import command_line_flag, unknown_option_message
from pipeline.tasks.stage1 import BuildSequences
from tests.e2e.test_cli_output import REPO, assert_one_error, luigi

COMMAND_LINE_ERROR = 2  # argparse's code, README "Troubleshooting"
NO_TASK_EXIT = 1  # Luigi's parser, README "Troubleshooting"
SETTINGS = [(section.get_task_family(), name, parameter)
            for section in config.SECTIONS for name, parameter in section.get_params()]


def settings_listing(cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pipeline.cli.settings"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_listing_names_every_setting_with_its_luigi_cfg_default_flag_and_meaning():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "luigi.cfg")
    result = settings_listing(REPO)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    for section, name, parameter in SETTINGS:
        assert f"[{section}]" in lines
        default = cfg.get(section, name)  # luigi.cfg holds every default (README, Configuration)
        entry = [index for index, line in enumerate(lines)
                 if re.fullmatch(rf"  {name} = {re.escape(default)} +{command_line_flag(name, section)}", line)]
        assert len(entry) == 1, (section, name, default)
        meaning = lines[entry[0] + 1]
        assert meaning == f"      {parameter.description}" and " Allowed: " in meaning, meaning
    assert len([line for line in lines if line.startswith("      ")]) == len(SETTINGS)


def test_without_a_luigi_cfg_the_listing_shows_the_built_in_defaults(tmp_path):
    lines = settings_listing(tmp_path).stdout.splitlines()
    assert re.search(r"^  epochs = 8 +--train-epochs$", "\n".join(lines), re.MULTILINE)
    assert re.search(r"^  attention_softmax = false +--train-attention-softmax$", "\n".join(lines), re.MULTILINE)
    assert re.search(r"^  precision_mode =  +--npu-precision-mode$", "\n".join(lines), re.MULTILINE)


def test_help_lists_every_setting_and_ends_pointing_to_the_listing(tmp_path):
    result = luigi(tmp_path / "data", "AllTasks", "--help")
    assert result.returncode == 0, result.stderr
    for section, name, _ in SETTINGS:
        assert command_line_flag(name, section) + " " in result.stdout
    assert result.stdout.rstrip().splitlines()[-1] == HELP_POINTER
    assert "Summary of" not in result.stdout
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("args, line", [
    (["TrainDIN", "--train-epohcs", "3"],
     "ERROR: unknown option --train-epohcs; did you mean --train-epochs? (every setting: python -m "
     "pipeline.cli.settings)"),
    (["AllTasks", "--preprocess-maxlen=20", "--raw-sorce=pickle", "--train-seed", "-1"],
     "ERROR: unknown option --raw-sorce; did you mean --raw-source? (every setting: python -m "
     "pipeline.cli.settings)"),
    (["BuildSequences", "--shrad", "1"],
     "ERROR: unknown option --shrad; did you mean --shard? (every setting: python -m pipeline.cli.settings)"),
    (["TrainDIN", "--train-e", "3"],
     "ERROR: ambiguous option --train-e: --train-embed-dim or --train-epochs (every setting: python -m "
     "pipeline.cli.settings)"),
])
def test_an_unknown_option_is_one_error_line_naming_the_closest_flag_and_exit_2(tmp_path, args, line):
    result = luigi(tmp_path / "data", *args)
    assert assert_one_error(result, "", COMMAND_LINE_ERROR) == line
    assert "usage:" not in result.stderr and "Summary of" not in result.stdout
    assert not (tmp_path / "data").exists()


def test_every_flag_luigi_accepts_is_known(tmp_path):
    """Luigi's own parser lists its flags with --help-all: the check must refuse none of them. Known flags are
    read after `luigi.cmdline` is imported, as in the `luigi` command (it registers `[retcode]`)."""
    importlib.import_module("luigi.cmdline")

    result = luigi(tmp_path / "data", "BuildSequences", "--help-all")
    listed = set(re.findall(r"^ +(--[A-Za-z][\w-]*)", result.stdout, re.MULTILINE))
    assert {"--workers", "--local-scheduler", "--shard", "--BuildSequences-shard", "--train-epochs"} <= listed
    assert listed <= known_flags(BuildSequences)


def test_no_task_is_luigis_one_line_exit_1_and_nothing_written(tmp_path):
    """`luigi --module pipeline` alone: Luigi's own parser answers (README's exit-code table, row 1)."""
    result = luigi(tmp_path / "data")
    assert result.returncode == NO_TASK_EXIT, result.stdout + result.stderr
    assert result.stderr.splitlines() == ["No task specified"] and result.stdout == ""
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("argv, expected", [
    (["BuildSequences", "--shard", "1", "--workers=2", "--train-seed", "-1"], None),
    (["TrainDIN", "--train-epoch", "3"], None),  # a unique prefix: argparse takes it
    (["TrainDIN", "--", "--not-an-option"], None),
    (["TrainDIN", "--train-seeds", "3"], "unknown option --train-seeds; did you mean --train-seed?"),
])
def test_options_are_checked_as_argparse_reads_them(argv, expected):
    message = unknown_option_message(argv, known_flags(BuildSequences))
    assert (message and message.split(" (every setting")[0]) == expected


@pytest.mark.parametrize("argv, ours", [
    (["--module", "pipeline", "AllTasks"], True),
    (["--module=pipeline.tasks.all", "AllTasks"], True),
    (["--module", "mine", "AllTasks"], False),  # may register its own settings after importing pipeline
    (["AllTasks"], False),
])
def test_only_a_command_loading_this_package_is_checked(argv, ours):
    assert names_this_package(argv) is ours


def test_the_readme_documents_the_lines_and_the_exit_code():
    readme = (REPO / "README.md").read_text()
    assert "| 2 | the command line itself: an unknown or ambiguous option (`ERROR: unknown option --train-epohcs; " \
           "did you mean --train-epochs?`) |" in readme
    assert "| `unknown option --train-epohcs; did you mean --train-epochs?`, `ambiguous option --train-e: " \
           "--train-embed-dim or --train-epochs` |" in readme
    assert "`python -m pipeline.cli.settings` prints every setting" in readme


# The exit codes the command's own code chooses (pipeline/cli/errors.py `*_EXIT`), and the words of their row.
EXIT_CONSTANT_MEANINGS = {"COMMAND_LINE_ERROR_EXIT": "the command line itself", "INTERRUPTED_EXIT": "interrupted",
                          "SCHEDULING_ERROR_EXIT": "`[retcode] scheduling_error`"}
# Luigi's own fixed codes: a run that ended well, and its parser's "No task specified".
LUIGI_FIXED_CODES = {0: "done", NO_TASK_EXIT: "no task named"}


def readme_exit_codes() -> dict:
    """{code: meaning} of README's "| exit code | meaning |" table (Troubleshooting)."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = lines.index("| exit code | meaning |") + 2  # past the header and its | --- | line
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        code, meaning = [cell.strip() for cell in line.strip("|").split("|", 1)]
        assert int(code) not in rows, line
        rows[int(code)] = meaning
    return rows


def test_the_readme_exit_code_table_matches_luigi_cfg_and_the_code():
    documented = readme_exit_codes()
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "luigi.cfg")
    retcodes = {name: int(value) for name, value in cfg.items("retcode")}
    for name, code in retcodes.items():  # every [retcode] value has its row, naming the key
        assert f"`[retcode] {name}`" in documented.get(code, ""), (name, code)
    for code, meaning in documented.items():  # every row naming a key has that key's code
        for name in re.findall(r"`\[retcode\] (\w+)`", meaning):
            assert retcodes.get(name) == code, (code, meaning)
    constants = {name: value for name, value in vars(cli_errors).items() if name.endswith("_EXIT")}
    for name, code in constants.items():
        assert EXIT_CONSTANT_MEANINGS[name] in documented.get(code, ""), (name, code)
    for code, words in LUIGI_FIXED_CODES.items():
        assert documented.get(code, "").startswith(words), code
    assert set(documented) == set(retcodes.values()) | set(constants.values()) | set(LUIGI_FIXED_CODES)
