"""Every numeric setting refuses NaN, the infinities and the values just outside the bounds it declares
(pipeline/config.py `Bounds`), and takes the bounds themselves, through the check the `luigi` command runs
when it schedules the tasks that read the setting. The settings are listed from their declarations, so a
new one is covered as soon as it is declared. And an empty command-line flag is refused for every setting,
not replaced by luigi.cfg's value. Pure function calls: the real command is driven by
tests/e2e/test_settings_and_data_dir.py."""
from __future__ import annotations

import math

import luigi
import pytest
from luigi.cmdline_parser import CmdlineParser

from din_common.errors import InputError
from pipeline import config
from pipeline.cli.errors import command_line_flag, unparsable_setting_message
from pipeline.settings import Settings
from pipeline.tasks.stage2 import current_npu_options, current_train_params
from pipeline.tasks.tuning import current_tune_settings
from tests.helpers.luigi_config import luigi_settings

# The check each section's settings go through when the `luigi` command schedules a task that reads them.
CHECK_OF_SECTION = {"paths": Settings.current, "raw": Settings.current, "preprocess": Settings.current,
                    "dask": Settings.current, "train": current_train_params, "npu": current_npu_options,
                    "tune": current_tune_settings}
# What a setting is checked together with, set so that its own bounds decide.
COMPANIONS = {
    "dask": {"preprocess": {"engine": "dask"}},  # [dask] is read by the dask engine only
    ("raw", "synthetic_items"): {"raw": {"synthetic_categories": "1"}},  # items >= categories
    ("raw", "synthetic_categories"): {"raw": {"synthetic_items": str(config.MAX_IDS)}},
}
SETTINGS = [(section.get_task_family(), name, parameter)
            for section in config.SECTIONS for name, parameter in section.get_params()]
NUMERIC = [(section, name, parameter) for section, name, parameter in SETTINGS if parameter.bounds is not None]


def refused_values(parameter: luigi.Parameter) -> list[str]:
    """NaN, the infinities outside the bounds, and the numbers just outside them (one step of 1, and for a
    setting that takes fractions a tiny one too), or on an open end."""
    bounds = parameter.bounds
    steps = (1,) if isinstance(parameter, luigi.IntParameter) else (1, 1e-9)
    values = ["nan", "-inf"] + ([] if bounds.high == math.inf else ["inf"])
    values += [bounds.low - step * max(1, abs(bounds.low)) for step in steps]
    if bounds.high is not None and bounds.high != math.inf:
        values += [bounds.high + step * max(1, abs(bounds.high)) for step in steps]
    values += [bounds.low] if bounds.low_open else []
    values += [bounds.high] if bounds.high_open else []
    return [str(value) for value in values]


def taken_values(parameter: luigi.Parameter) -> list[str]:
    bounds = parameter.bounds
    values = [] if bounds.low_open else [bounds.low]
    values += [bounds.high] if bounds.high is not None and not bounds.high_open else []
    return [str(value) for value in values]


def cases(values_of) -> list:
    return [pytest.param(section, name, value, id=f"{section}.{name}={value}")
            for section, name, parameter in NUMERIC for value in values_of(parameter)]


def settings_with(section: str, name: str, value: str, data_dir) -> dict:
    """luigi_settings' sections: the setting's value, its companions and a data dir of the test's own."""
    sections = {"paths": {"data_dir": str(data_dir)}}
    for companions in (COMPANIONS.get(section, {}), COMPANIONS.get((section, name), {}), {section: {name: value}}):
        for companion_section, values in companions.items():
            sections.setdefault(companion_section, {}).update(values)
    return sections


def error_line(error: Exception) -> str:
    """The line the `luigi` command prints for `error` (pipeline.cli.errors.InputErrorFilter): an InputError's
    message, or for a value Luigi cannot parse the line naming the setting."""
    if isinstance(error, InputError):
        return error.message
    return unparsable_setting_message(str(error)) or str(error)


def test_every_number_setting_declares_its_bounds():
    undeclared = [f"[{section}] {name}" for section, name, parameter in SETTINGS
                  if isinstance(parameter, (luigi.IntParameter, luigi.FloatParameter)) and parameter.bounds is None]
    assert undeclared == []
    assert {section for section, _, _ in SETTINGS} <= set(CHECK_OF_SECTION)


@pytest.mark.parametrize("section, name, value", cases(refused_values))
def test_a_value_outside_the_declared_bounds_is_refused_naming_the_setting(tmp_path, section, name, value):
    with luigi_settings(**settings_with(section, name, value, tmp_path / "data")):
        with pytest.raises((InputError, ValueError)) as refused:
            CHECK_OF_SECTION[section]()
    assert f"[{section}] {name}" in error_line(refused.value)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("section, name, value", cases(taken_values))
def test_the_declared_bounds_themselves_are_taken(tmp_path, section, name, value):
    with luigi_settings(**settings_with(section, name, value, tmp_path / "data")):
        CHECK_OF_SECTION[section]()


@pytest.mark.parametrize("section, name", [(section, name) for section, name, _ in SETTINGS])
def test_an_empty_flag_is_refused_rather_than_replaced_by_luigi_cfg(section, name):
    flag = command_line_flag(name, section)
    with CmdlineParser.global_instance(["TrainDIN", f"{flag}="]):
        with pytest.raises(InputError, match=rf"^{flag} was given an empty value, which Luigi would replace by "
                                             rf"luigi\.cfg's \[{section}\] {name}: expected a value"):
            config.refuse_empty_flags()
