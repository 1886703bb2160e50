"""Settings out of range and data dirs that cannot be used, through the real `luigi` command: one ERROR line
from the settings' validation (exit 35) before anything is written, or from the first write (exit 30)."""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.e2e.test_cli_output import LUIGI, REPO, SCHEDULING_ERROR, TASK_FAILED, TINY, assert_one_error, luigi

SLOW = pytest.mark.slow  # more variants of the quick cases: CI runs them with the slow tests


@pytest.mark.parametrize("args, pattern", [
    (["Preprocess", "--preprocess-seed", "-1"],
     r"^ERROR: \[preprocess\] seed must be an integer from 0 to 4294967295, got -1 \(set it in luigi\.cfg or with "
     r"--preprocess-seed\)$"),
    (["TrainDIN", "--train-seed", "-1"], r"^ERROR: \[train\] seed must be an integer from 0 to 4294967295 "),
    pytest.param(["TrainDIN", "--train-seed", str(2**64)],
                 rf"^ERROR: \[train\] seed must be an integer from 0 to 4294967295 .*got {2**64} ", marks=SLOW),
    (["Preprocess", "--raw-synthetic-users", "0"],
     r"^ERROR: \[raw\] synthetic_users must be an integer from 1 to 2,147,483,647, got 0 "),
    pytest.param(["AllTasks", "--raw-synthetic-items", "3"],
                 r"^ERROR: \[raw\] synthetic_items must be an integer from 6 to 2,147,483,647, got 3 ", marks=SLOW),
    pytest.param(["Preprocess", "--raw-synthetic-categories", str(2**31)],
                 r"^ERROR: \[raw\] synthetic_categories must be an integer from 1 to 2,147,483,647, got 2147483648 ",
                 marks=SLOW),
    (["TrainDIN", "--train-attention-hidden", ""],
     r"^ERROR: --train-attention-hidden was given an empty value, which Luigi would replace by luigi\.cfg's "
     r"\[train\] attention_hidden: expected a value"),
    (["TrainDIN", "--train-worker-timeout", "-1"],
     r"^ERROR: \[train\] worker_timeout must be a positive number of seconds, got -1\.0 "),
    (["TrainDIN", "--train-learning-rate", "inf"],
     r"^ERROR: \[train\] learning_rate must be a positive number \(finite\), got inf \(set it in luigi\.cfg or "
     r"with --train-learning-rate\)$"),
    pytest.param(["TrainDIN", "--train-worker-timeout", "nan"],
                 r"^ERROR: \[train\] worker_timeout must be a positive number of seconds, got nan ", marks=SLOW),
    pytest.param(["Preprocess", "--raw-json-max-gzip-ratio", "0"],
                 r"^ERROR: \[raw\] json_max_gzip_ratio must be a positive integer, got 0 ", marks=SLOW),
], ids=["preprocess-seed", "train-seed", "train-seed-2**64", "users-0", "items-3", "categories-2**31",
        "attention-hidden-empty", "worker-timeout-negative", "learning-rate-inf",
        "worker-timeout-nan", "gzip-ratio-0"])
def test_a_setting_out_of_range_is_one_line_before_anything_is_written(tmp_path, args, pattern):
    data_dir = tmp_path / "data"
    task, *flags = args
    assert_one_error(luigi(data_dir, task, *TINY, *flags), pattern, SCHEDULING_ERROR)  # the last flag wins
    assert not data_dir.exists()  # no raw/manifest.json, no params.json, no lock


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.write_text("not a directory")
    assert_one_error(luigi(data_dir, "Preprocess", *TINY),
                     rf"^ERROR: \[paths\] data_dir {data_dir} is a file: expected a directory ", SCHEDULING_ERROR)
    assert data_dir.read_text() == "not a directory"


def luigi_without_override(data_dir, *args):
    """The `luigi` command as test_cli_output runs it, without root's right to read and write anything (the
    capabilities that override file permissions are dropped; other users have none of them anyway)."""
    caps = "-dac_override,-dac_read_search"
    unprivileged = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"] if os.geteuid() == 0 else []
    command = [*unprivileged, str(LUIGI), "--module", "pipeline", *args, "--paths-data-dir", str(data_dir)]
    return subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=600)


def test_a_read_only_data_dir_is_one_line_and_nothing_is_written(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o555)
    result = luigi_without_override(data_dir, "Preprocess", *TINY)
    assert_one_error(result, rf"^ERROR: cannot write in the data directory {data_dir} \(Permission denied: "
                             rf"{data_dir / '.locks'}\): expected a directory this user may write", TASK_FAILED)
    assert list(data_dir.iterdir()) == []


def test_a_data_dir_the_user_may_not_open_is_one_line(tmp_path):
    private = tmp_path / "private"
    (private / "data").mkdir(parents=True)
    private.chmod(0o700)
    if os.geteuid() == 0:
        os.chown(private, 65534, 65534)  # another user's private directory
    result = luigi_without_override(private / "data", "Preprocess", *TINY)
    assert_one_error(result, rf"^ERROR: \[paths\] data_dir {private / 'data'} cannot be opened \(Permission denied: ",
                     SCHEDULING_ERROR)
    assert list((private / "data").iterdir()) == []
