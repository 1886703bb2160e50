"""Running a Luigi task in-process and reading what it logged: a user mistake must be one clear line."""
import logging
import re

import luigi

from tests.helpers.luigi_config import luigi_settings


class Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


def build_and_capture(task, **settings):
    """luigi.build(task) with `settings`; returns (succeeded, the log lines at WARNING and above)."""
    handler = Messages()
    logger = logging.getLogger("luigi-interface")
    logger.addHandler(handler)
    try:
        with luigi_settings(**settings):
            ok = luigi.build([task], local_scheduler=True, log_level="WARNING")
    finally:
        logger.removeHandler(handler)
    return ok, handler.lines


def assert_one_clear_line(lines, message):
    matching = [line for line in lines if "Traceback" not in line and re.search(message, line)]
    assert matching, f"no message matching {message!r} in {lines}"
    assert len(matching[0].splitlines()) == 1, "the message is one line"
    assert not any("Traceback" in line for line in lines), "no traceback for a user mistake"
