"""JSON log lines: fields, context bound to a block, secrets masked."""

from __future__ import annotations

import io
import json
import logging

import pytest

from ferryman.logs import (
    ContextFilter,
    JsonFormatter,
    LogFormatError,
    log_context,
    resolve_format,
)


def json_logger() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter({"proxy": "p1"}))
    logger = logging.getLogger("ferryman.test.json")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_json_lines_carry_context() -> None:
    logger, stream = json_logger()
    logger.info("plain %s", "line")
    with log_context(session=7, task=21):
        logger.warning("inside")
    logger.info("explicit", extra={"session": 9, "password": "hunter2"})
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["message"] == "plain line" and lines[0]["level"] == "info"
    assert lines[0]["logger"] == "ferryman.test.json" and lines[0]["proxy"] == "p1"
    assert "session" not in lines[0] and lines[0]["time"].endswith("+00:00")
    assert (lines[1]["session"], lines[1]["task"], lines[1]["level"]) == (7, 21, "warning")
    assert lines[2]["session"] == 9 and "hunter2" not in stream.getvalue()
    assert "ValueError: boom" in lines[3]["exception"]


def test_format_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FERRYMAN_LOG_FORMAT", raising=False)
    assert resolve_format(None) == "text"
    monkeypatch.setenv("FERRYMAN_LOG_FORMAT", "JSON")
    assert resolve_format(None) == "json"
    assert resolve_format("text") == "text"
    with pytest.raises(LogFormatError, match="choose text or json"):
        resolve_format("xml")
