"""Readable logs by default, JSON lines on request; message texts only if asked for."""

from __future__ import annotations

import json
import logging

from bot.config import Settings

CHATTY = ("markdown_it", "aiosqlite", "peewee", "httpcore", "httpx", "aiohttp.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # nio logs event contents when verbose: quiet unless content logging is asked for
    if not settings.log_content:
        logging.getLogger("nio").setLevel(logging.WARNING)
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
