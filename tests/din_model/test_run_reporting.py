"""What a training run reports: curves.png's title and ticks, and TensorFlow started
without its start-up noise (din_model.train.reporting, din_model.device.quiet_start)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EPOCHS = [{"epoch": e, "train_loss": 0.7 - 0.1 * e, "train_samples_per_s": 1000.0,
           "val": {"auc": 0.6 + 0.1 * e, "gauc": 0.6, "logloss": 0.6}} for e in (1, 2)]


def test_curves_are_titled_with_run_and_data_and_have_whole_epoch_ticks(tmp_path):
    from din_model.train.reporting import curves_figure, plot_curves, run_title

    run_dir = tmp_path / "mydata" / "runs" / "abc123"
    (tmp_path / "mydata" / "raw").mkdir(parents=True)
    (tmp_path / "mydata" / "raw" / "manifest.json").write_text(json.dumps({"source": "synthetic"}))
    title = run_title(run_dir)
    assert title == "DIN run abc123, data: mydata (synthetic)"
    figure = curves_figure(EPOCHS, title)
    assert figure._suptitle.get_text() == title
    for axes in figure.axes:
        ticks = [t for t in axes.get_xticks() if 1 <= t <= 2]
        assert ticks == [1.0, 2.0]
    plot_curves(EPOCHS, tmp_path / "curves.png", title)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_title_without_a_raw_manifest_names_the_data_dir(tmp_path):
    from din_model.train.reporting import run_title

    assert run_title(tmp_path / "d" / "runs" / "r1") == "DIN run r1, data: d"


def test_known_start_up_notes_are_filtered_and_other_lines_kept():
    from din_model.device.quiet_start import filtered

    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1795838482.881536    5480 port.cc:153] oneDNN custom operations are on.\n"
            "I0000 00:00:1795838482.882391    5480 cudart_stub.cc:31] Could not find cuda drivers\n"
            "E0000 00:00:1795838484.815314    5480 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
            "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
            "E0000 00:00:1795838484.815314    5480 something.cc:1] a real error\n"
            "a user's own line\n")
    assert filtered(text) == ("E0000 00:00:1795838484.815314    5480 something.cc:1] a real error\n"
                              "a user's own line\n")


@pytest.mark.parametrize("user_level", [None, "0"])
@pytest.mark.slow
def test_importing_tensorflow_prints_no_start_up_noise_unless_the_user_sets_the_log_level(user_level):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    if user_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = user_level
    env["PYTHONPATH"] = str(REPO)
    code = ("import din_model, din_model.device.quiet_start as q; tf = q.import_tensorflow(); "
            "print(din_model.USER_SET_TF_LOG_LEVEL, os.environ['TF_CPP_MIN_LOG_LEVEL'], float(tf.constant(1.5)))")
    result = subprocess.run([sys.executable, "-c", "import os; " + code], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == (["False", "2", "1.5"] if user_level is None else ["True", "0", "1.5"])
    if user_level is None:
        assert result.stderr == ""
