"""TrainDIN and EvaluateDIN as Luigi tasks, on fixture shards standing in for Preprocess."""
import json

import luigi
import pytest

from pipeline.tasks import stage2
from tests.helpers.din_fixtures import write_random_fixture
from tests.helpers.train_settings import TRAIN_SETTINGS, FixtureShards

class ConfigOverrides:
    """Sets luigi config options and puts the previous values back."""

    def __init__(self):
        self.config = luigi.configuration.get_config()
        self.saved = {}

    def set(self, section, option, value):
        if not self.config.has_section(section):
            self.config.add_section(section)
        if (section, option) not in self.saved:
            had = self.config.has_option(section, option)
            self.saved[(section, option)] = self.config.get(section, option) if had else None
        self.config.set(section, option, value)

    def restore(self):
        for (section, option), value in self.saved.items():
            if value is None:
                self.config.remove_option(section, option)
            else:
                self.config.set(section, option, value)


@pytest.fixture
def overrides():
    config = ConfigOverrides()
    yield config
    config.restore()


@pytest.fixture
def configured(tmp_path, monkeypatch, overrides):
    spec = write_random_fixture(tmp_path, sizes=(("train", 300), ("val", 100), ("test", 100)))
    overrides.set("paths", "data_dir", str(tmp_path))
    for option, value in TRAIN_SETTINGS.items():
        overrides.set("train", option, value)
    monkeypatch.setattr(stage2.RunTask, "preprocess_task", lambda self: FixtureShards(spec=str(spec)))
    return tmp_path


def test_evaluate_din_trains_then_evaluates_and_is_complete(configured, capsys, monkeypatch):
    reports = []
    monkeypatch.setattr(stage2.RunTask, "report",
                        lambda self, message, percent: reports.append((self.get_task_family(), message, percent)))
    assert luigi.build([stage2.EvaluateDIN()], local_scheduler=True, log_level="WARNING")
    trained = [percent for family, _, percent in reports if family == "TrainDIN"]
    assert trained and trained[-1] == 100 and all(isinstance(percent, int) for percent in trained)
    assert [report for report in reports if report[0] == "EvaluateDIN"] == [
        ("EvaluateDIN", "evaluating on the test split", 0), ("EvaluateDIN", "evaluation done", 100)]
    train_task = stage2.TrainDIN()
    run_dir = train_task.run_dir()
    assert run_dir.parent == configured / "runs"
    assert train_task.complete() and stage2.EvaluateDIN().complete()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["training_done"] and "test" in metrics and len(metrics["epochs"]) == 1
    assert "saved model" in capsys.readouterr().out


def test_changed_training_parameter_is_a_new_run(configured, overrides):
    first = stage2.TrainDIN().run_dir()
    overrides.set("train", "learning_rate", "0.02")
    assert stage2.TrainDIN().run_dir() != first
    assert stage2.current_train_params().learning_rate == 0.02
