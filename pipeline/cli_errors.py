"""User-facing error reporting for the `luigi` command and the standalone tools.

Luigi logs a failed task with its full traceback. For an `InputError` (a user
mistake, already explained in one line) that traceback is noise, so a logging
filter on Luigi's logger replaces it with the message alone. Tracebacks stay
for every other exception, and for InputError too when the log level is DEBUG
(`luigi --log-level DEBUG ...`).
"""
from __future__ import annotations

import logging

from pipeline.errors import InputError

LUIGI_LOGGER = "luigi-interface"


class InputErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, InputError) and not logging.getLogger(LUIGI_LOGGER).isEnabledFor(logging.DEBUG):
            record.msg, record.args = "ERROR: %s", (error.message,)
            record.exc_info, record.exc_text = None, None
        return True


def install_error_reporting() -> None:
    logger = logging.getLogger(LUIGI_LOGGER)
    if not any(isinstance(f, InputErrorFilter) for f in logger.filters):
        logger.addFilter(InputErrorFilter())
