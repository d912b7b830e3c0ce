"""Log set-up of every process: one stderr handler, text or JSON lines (setting ``logging.format``).

``text``: ``2026-12-07 10:00:00,123 INFO stream.app: message``. ``json``: one object per line, for log collectors::

    {"ts": "2026-12-07T10:00:00.123+00:00", "level": "INFO", "logger": "stream.app", "message": "...", "pid": 7}

plus ``exc_info`` (the formatted traceback) when an exception is logged. Terminal escape codes that libraries print
(Feast's materialize colours its output) are removed from stdout and stderr when they are not a terminal.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import datetime, timezone

from topicfs.errors import SecretMaskingFilter
from topicfs.settings import LoggingConfig

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# libraries that log every step at INFO (gensim epochs, Feast registry steps, HTTP requests); -v shows them
CHATTY_LOGGERS = ("gensim", "feast", "smart_open", "httpx", "faiss")


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object on one line (newlines in messages and tracebacks are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process or os.getpid(),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


class EscapeStrippingStream:
    """A text stream that drops ANSI escape sequences (colours, cursor moves) from what is written to it."""

    ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")

    def __init__(self, stream) -> None:
        self.wrapped = stream

    def write(self, text: str) -> int:
        self.wrapped.write(self.ESCAPES.sub("", text))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self.wrapped, name)


def strip_escapes_when_not_a_terminal() -> None:
    """Wrap ``sys.stdout`` / ``sys.stderr`` in :class:`EscapeStrippingStream` when they are not a terminal (once)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None or isinstance(stream, EscapeStrippingStream):
            continue
        try:
            terminal = stream.isatty()
        except (AttributeError, ValueError):  # closed or not a real stream
            continue
        if not terminal:
            setattr(sys, name, EscapeStrippingStream(stream))


def configure_logging(config: LoggingConfig, verbose: bool = False) -> None:
    """Replace the root logger's handlers with one stderr handler in ``config.format``; INFO (DEBUG when ``verbose``)."""
    strip_escapes_when_not_a_terminal()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(SecretMaskingFilter())  # a Redis or Kafka URL may carry a password
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
