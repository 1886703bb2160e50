"""User-facing error reporting for the `luigi` command and the standalone tools.

Luigi logs a failed task with its full traceback. For an `InputError` (a user
mistake, already explained in one line) that traceback is noise, so a logging
filter on Luigi's logger replaces it with the message alone. Tracebacks stay
for every other exception, and for InputError too when the log level is DEBUG
(`luigi --log-level DEBUG ...`).
"""
from __future__ import annotations

import logging

from din_common.errors import InputError

LUIGI_LOGGER = "luigi-interface"


_FORMATTED_INPUT_ERROR = f"{InputError.__module__}.{InputError.__qualname__}: "


class InputErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger(LUIGI_LOGGER).isEnabledFor(logging.DEBUG):
            return True
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, InputError):
            record.msg, record.args = "%s", (error.message,)
            record.exc_info, record.exc_text = None, None
        elif isinstance(record.msg, str) and _FORMATTED_INPUT_ERROR in record.getMessage():
            # Errors in complete()/requires() reach the log as an already formatted traceback.
            message = record.getMessage().rsplit(_FORMATTED_INPUT_ERROR, 1)[1].strip()
            record.msg, record.args = "%s", (message,)
        return True


def install_error_reporting() -> None:
    logger = logging.getLogger(LUIGI_LOGGER)
    if not any(isinstance(f, InputErrorFilter) for f in logger.filters):
        logger.addFilter(InputErrorFilter())
