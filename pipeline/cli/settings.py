"""`python -m pipeline.cli.settings`: every setting of the `luigi --module pipeline` command.

Printed from the one definition of the settings (pipeline/config.py `SECTIONS`), grouped by
luigi.cfg section: the luigi.cfg key with its default (luigi.cfg's value where it sets one, else
the built-in fallback), the command-line flag, what the setting does and the values it takes.
`luigi --module pipeline TASK --help` lists the same flags and ends with a line pointing here
(pipeline.cli.command.install_help_pointer; this module is only run, never imported by the command).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import luigi

from pipeline import config
from pipeline.cli.errors import command_line_flag


@dataclass(frozen=True)
class SettingRow:
    section: str
    name: str
    flag: str
    default: str
    description: str


def default_text(section: str, name: str, parameter: luigi.Parameter) -> str:
    """The value in force without a flag: luigi.cfg's text where it sets one, else the parameter's fallback."""
    cfg = luigi.configuration.get_config()
    if cfg.has_option(section, name):
        return cfg.get(section, name)
    value = parameter.task_value(section, name)
    return str(value).lower() if isinstance(value, bool) else parameter.serialize(value)


def setting_rows(sections=config.SECTIONS) -> list[SettingRow]:
    """One row per setting of `sections`, in definition order."""
    rows = []
    for section_class in sections:
        section = section_class.get_task_family()
        for name, parameter in section_class.get_params():
            rows.append(SettingRow(section, name, command_line_flag(name, section),
                                   default_text(section, name, parameter), parameter.description or ""))
    return rows


def settings_text(rows: list[SettingRow]) -> str:
    """The listing: a heading per section, then per setting `name = default   --flag` and its description."""
    lines = ["Settings of `luigi --module pipeline ...`: set them in luigi.cfg ([section] name = value) or with the "
             "flag; the values shown are the defaults in force here."]
    width = max(len(f"{row.name} = {row.default}") for row in rows) + 2
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            lines += ["", f"[{section}]"]
        lines.append(f"  {f'{row.name} = {row.default}':<{width}}{row.flag}")
        lines.append(f"      {row.description}")
    return "\n".join(lines)


def main() -> int:
    print(settings_text(setting_rows()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
