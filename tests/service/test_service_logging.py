"""JSON log lines: the formatter of log records and the access log's own path agree to the character."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from service.logging import AccessLog, JsonFormatter, request_id

TIME = re.compile(r'"time": "(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00)"')
EXTRAS: dict[str, Any] = {"method": "POST", "path": '/predict/"ü\\\n', "status": 200, "duration_ms": 1.25}


@pytest.fixture
def access() -> Iterator[logging.Logger]:
    logger = logging.getLogger("service.access")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield logger
    logger.setLevel(level)


def formatter_line(logger: logging.Logger) -> str:
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "request", (), None, extra=EXTRAS)
    return JsonFormatter().format(record) + "\n"


@pytest.mark.parametrize("rid", ["rid-1", None])
def test_access_log_writes_what_the_formatter_makes_of_a_record(
    access: logging.Logger, capsys: pytest.CaptureFixture[str], rid: str | None
) -> None:
    token = request_id.set(rid)
    try:
        AccessLog().write(**EXTRAS)
        expected = formatter_line(access)
    finally:
        request_id.reset(token)
    line = capsys.readouterr().err
    assert TIME.search(line) and TIME.search(expected)
    assert TIME.sub("", line) == TIME.sub("", expected)
    entry = json.loads(line)
    assert entry["path"] == EXTRAS["path"] and entry.get("request_id") == rid


def test_access_log_follows_the_access_logger_level(access: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    access.setLevel(logging.WARNING)
    AccessLog().write(**EXTRAS)
    assert capsys.readouterr().err == ""
