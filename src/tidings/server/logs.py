"""Structured logs: one JSON object per line.

What a log line may hold: the logger, level, a fixed message, and the extra fields named in
`FIELDS` (route templates such as ``/v1/messages/{username}``, status codes, durations,
counts, error class names). Never a raw path (it carries usernames, message and attachment
ids), a header, a body, a key or an exception message: exceptions are logged by class name.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

FIELDS = ("event", "method", "route", "status", "duration_ms", "count", "error", "node")
"""The only extra attributes a record may carry into the output."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in FIELDS:
            if name in record.__dict__:
                data[name] = record.__dict__[name]
        if record.exc_info and record.exc_info[0] is not None:
            # The class only: exception messages and tracebacks can quote data.
            data["error"] = record.exc_info[0].__name__
        return json.dumps(data, separators=(",", ":"))


def log_config(level: str = "info") -> dict[str, Any]:
    """A `logging.config.dictConfig` for the server process (uvicorn's ``log_config``)."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    logger = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": handler},
        "loggers": {"tidings": logger, "uvicorn": logger, "uvicorn.error": logger},
    }
