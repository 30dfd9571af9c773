"""JSON logs, one object per line, carrying the id of the request being served.

The request id lives in a context variable that the request middleware sets; it follows the request
into the thread pool. Extra fields passed with `logger.info(..., extra={...})` become JSON keys.
The access log writes its lines in the same shape without going through `logging` (`AccessLog`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

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
    """The access log: a line per request on standard error, the line JsonFormatter makes of a record
    with these extras (a test holds the two to the same output).

    It skips `logging`'s machinery (a LogRecord, the handler chain, the generic formatter, `json.dumps`
    of a dict), which cost the server about 60 µs of CPU per request under load, a tenth of a small
    request's cost; one f-string costs about 14. Standard error is where `log_config` sends every log
    record; the `service.access` logger's level turns the lines on (info) and off.
    """

    def __init__(self) -> None:
        self._logger = logging.getLogger("service.access")
        self._clock = _Clock()

    def write(self, method: str, path: str, status: int, duration_ms: float) -> None:
        """Log a request at info level."""
        if not self._logger.isEnabledFor(logging.INFO):
            return
        rid = request_id.get()
        rid_item = "" if rid is None else f'"request_id": {_text(rid)}, '
        sys.stderr.write(
            f'{{"time": "{self._clock.text(time.time())}", "level": "info", "logger": "{self._logger.name}", '
            f'"pid": {_pid}, "message": "request", {rid_item}"method": {_text(method)}, "path": {_text(path)}, '
            f'"status": {status}, "duration_ms": {duration_ms}}}\n'
        )
        sys.stderr.flush()


def lighten_records() -> None:
    """Process-wide (called by a worker process at start): records stop collecting what JsonFormatter
    never writes, as the logging HOWTO's "Optimization" section shows: thread and multiprocessing names,
    and the process id (a getpid system call per record; the formatter knows it)."""
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.logProcesses = False


def log_config(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict sending every logger, uvicorn's included, through JsonFormatter."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            name: {"handlers": [], "level": level.upper(), "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
