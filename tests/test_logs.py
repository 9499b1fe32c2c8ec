"""Structured logs: one JSON object per line on request, extras included."""

from __future__ import annotations

import json
import logging

from cellframe.node.logs import JsonLineFormatter, configure_logging


def test_json_line_formatter_writes_one_object_with_the_extras() -> None:
    record = logging.makeLogRecord({"name": "cellframe.node.node", "levelname": "WARNING",
                                    "msg": "refused %s", "args": ("m1",), "node": "web-01"})
    entry = json.loads(JsonLineFormatter().format(record))
    assert entry["message"] == "refused m1"
    assert entry["level"] == "warning" and entry["logger"] == "cellframe.node.node"
    assert entry["node"] == "web-01"
    assert entry["time"].endswith("Z")


def test_configure_logging_with_json_lines_installs_the_json_formatter() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(verbose=1, json_lines=True)
        (handler,) = root.handlers
        assert isinstance(handler.formatter, JsonLineFormatter)
        assert root.level == logging.INFO
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
