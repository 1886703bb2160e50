"""`python -m pipeline.cli.npu_check`: the user command reads luigi.cfg's [npu] and runs the checks."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_command_on_a_host_without_the_adapter_fails_at_open(tmp_path):
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "pipeline.cli.npu_check", "--dump-dir", str(tmp_path / "dump")],
                          cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1].startswith("[npu_check] open: FAIL ([train] device = npu, but the Ascend CANN "
                                                   "TF adapter (npu_device) is not importable")


def test_invalid_npu_settings_are_one_error_line_and_exit_2(tmp_path):
    config = tmp_path / "luigi.cfg"
    config.write_text("[npu]\nprecision_mode = fastest_please\n")
    environment = {**os.environ, "PYTHONPATH": str(REPO), "LUIGI_CONFIG_PATH": str(config)}
    done = subprocess.run([sys.executable, "-m", "pipeline.cli.npu_check", "--dump-dir", str(tmp_path / "dump")],
                          cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("ERROR: ") and "precision_mode" in line
