"""JSON log lines: the formatter of log records and the access log's own path agree to the character."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from service.logging import ACCESS_LOGGER, AccessLog, JsonFormatter, log_config, request_id

TIME = re.compile(r'"time": "(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00)"')
EXTRAS: dict[str, Any] = {"method": "POST", "path": '/predict/"ü\\\n', "status": 200, "duration_ms": 1.25}


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> Iterator[logging.Logger]:
    """The access logger at info level, its records captured (log_config's handler writes their message)."""
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        yield logging.getLogger(ACCESS_LOGGER)


def access_lines(caplog: pytest.LogCaptureFixture) -> str:
    """What log_config's access handler writes of the captured records: each message, a line each."""
    formatter = logging.Formatter(log_config("info")["formatters"]["line"]["format"])
    return "".join(formatter.format(r) + "\n" for r in caplog.records if r.name == ACCESS_LOGGER)


def formatter_line(logger: logging.Logger) -> str:
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "request", (), None, extra=EXTRAS)
    return JsonFormatter().format(record) + "\n"


@pytest.mark.parametrize("rid", ["rid-1", None])
def test_access_log_writes_what_the_formatter_makes_of_a_record(
    access: logging.Logger, caplog: pytest.LogCaptureFixture, rid: str | None
) -> None:
    token = request_id.set(rid)
    try:
        AccessLog().write(**EXTRAS)
        expected = formatter_line(access)
    finally:
        request_id.reset(token)
    line = access_lines(caplog)
    assert TIME.search(line) and TIME.search(expected)
    assert TIME.sub("", line) == TIME.sub("", expected)
    entry = json.loads(line)
    assert entry["path"] == EXTRAS["path"] and entry.get("request_id") == rid


def test_access_log_follows_the_access_logger_level(access: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    access.setLevel(logging.WARNING)
    AccessLog().write(**EXTRAS)
    assert access_lines(caplog) == ""
