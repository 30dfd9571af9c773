"""JSON logs, one object per line, carrying the id of the request being served.

The request id lives in a context variable that the request middleware sets; it follows the request
into the thread pool. Extra fields passed with `logger.info(..., extra={...})` become JSON keys.
The access log makes its lines in the same shape with one f-string (`AccessLog`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
ACCESS_LOGGER = "service.access"

_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class _Clock:
    """Log timestamps, ISO 8601 in UTC to the millisecond; the date and time to the second made once a second."""

    def __init__(self) -> None:
        self._second, self._second_text = -1, ""

    def text(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}+00:00"


_text = json.encoder.encode_basestring_ascii
"""A str as a JSON string, escaped as `json.dumps` escapes it."""


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, pid, message, request id, extras, exception."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._clock.text(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": _pid,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        entry.update((k, v) for k, v in record.__dict__.items() if k not in _RECORD_ATTRIBUTES)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class AccessLog:
    """The access log: a line per request, the line JsonFormatter makes of a record with these extras (a
    test holds the two to the same output), made by one f-string instead of the generic formatter's
    `json.dumps` of a dict, and logged through the `service.access` logger, whose handler (`log_config`)
    writes messages as they are. Its level turns the lines on (info) and off.
    """

    def __init__(self) -> None:
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._clock = _Clock()

    def write(self, method: str, path: str, status: int, duration_ms: float) -> None:
        """Log a request at info level."""
        if not self._logger.isEnabledFor(logging.INFO):
            return
        rid = request_id.get()
        rid_item = "" if rid is None else f'"request_id": {_text(rid)}, '
        self._logger.info(
            f'{{"time": "{self._clock.text(time.time())}", "level": "info", "logger": "{ACCESS_LOGGER}", '
            f'"pid": {_pid}, "message": "request", {rid_item}"method": {_text(method)}, "path": {_text(path)}, '
            f'"status": {status}, "duration_ms": {duration_ms}}}'
        )


def lighten_records() -> None:
    """Process-wide (called by a worker process at start): records stop collecting what JsonFormatter
    never writes, as the logging HOWTO's "Optimization" section shows: thread and multiprocessing names,
    and the process id (a getpid system call per record; the formatter knows it)."""
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.logProcesses = False


def log_config(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict sending every logger, uvicorn's included, through JsonFormatter
    to standard error; the access log's lines, already JSON, go there as they are."""
    stream = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}, "line": {"format": "%(message)s"}},
        "handlers": {"default": {**stream, "formatter": "json"}, "access": {**stream, "formatter": "line"}},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            ACCESS_LOGGER: {"handlers": ["access"], "level": level.upper(), "propagate": False},
            **{
                name: {"handlers": [], "level": level.upper(), "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            },
        },
    }
