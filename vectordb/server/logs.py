"""Logging for the server: plain text (key=value fields) or JSON lines.

Fields passed with ``logger.info("request", extra={"status": 200, ...})`` are appended as
``status=200`` in text mode and become keys of the JSON object in JSON mode, so one call
site serves both formats.
"""
from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import time
from typing import Any, Dict, Optional, TextIO

# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName", "color_message"}


def record_fields(record: logging.LogRecord) -> Dict[str, Any]:
    """The structured fields attached to a record with `extra=`."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


def _format_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text)
    return text


def _utc_stamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """`2024-05-01T12:00:00.123Z INFO vectordb.server: request method=GET status=200`"""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc_stamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        fields = record_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={_format_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        obj: Dict[str, Any] = {
            "time": _utc_stamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            obj.setdefault(key, value)
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str, ensure_ascii=False)


class _UnformattedQueueHandler(logging.handlers.QueueHandler):
    # The stock QueueHandler formats in the calling thread; here the listener thread does it.
    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


_listener: Optional[logging.handlers.QueueListener] = None


def configure_logging(level: int = logging.INFO, fmt: str = "text", stream: Optional[TextIO] = None) -> None:
    """Send every logger (ours, uvicorn's) to stderr in the chosen format.

    Records go through a queue to a writer thread, so formatting and the write (a syscall per
    line) never run on the event loop. Call flush_logging() before the process exits.
    """
    global _listener
    flush_logging()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    records: "queue.SimpleQueue[logging.LogRecord]" = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(records, handler)
    _listener.start()
    atexit.register(flush_logging)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(_UnformattedQueueHandler(records))
    root.setLevel(level)
    # uvicorn configures its own handlers only when given a log_config; we pass none, so make
    # sure its loggers propagate to ours and carry no stale handlers.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        lg.setLevel(level)


def flush_logging() -> None:
    """Write out every queued record and stop the writer thread (idempotent)."""
    global _listener
    if _listener is not None:
        listener, _listener = _listener, None
        listener.stop()
