"""Logging through structlog, configured per app and never globally.

Importing pynenc configures nothing: each app builds its own structlog logger
(level, stream and format from its settings) when it first logs. Lines are
readable on a terminal and JSON otherwise; lines about an invocation carry
``task_id`` and ``invocation_id``.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, TextIO


def _import_structlog_without_rich() -> Any:
    """Import structlog without letting it import rich (about 5 MiB: rich and pygments).

    structlog's console renderer imports rich, when it is installed, only to draw exception
    tracebacks; pynenc depends on rich for ``pynenc status``. Every runner process of a
    supervisor would hold those modules for nothing. While structlog is imported, ``rich``
    is marked absent in ``sys.modules`` (so its ``import rich`` fails), then unmarked: rich
    stays importable for the CLI and for the user's own code. Tracebacks in console lines
    are plain (``exception_formatter`` below), whichever was imported first.
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        import structlog

        return structlog
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog
    finally:
        del sys.modules["rich"]
    return structlog


structlog = _import_structlog_without_rich()

if TYPE_CHECKING:
    from pynenc.conf.config_pynenc import ConfigPynenc


def _renderer(log_format: str, stream: TextIO) -> Any:
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    if log_format == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback)


def build_logger(conf: ConfigPynenc, stream: TextIO | None = None, **context: Any) -> Any:
    """A structlog logger for one app (or daemon), following its logging settings."""
    stream = stream or (sys.stdout if conf.logging_stream == "stdout" else sys.stderr)
    level = logging.getLevelNamesMapping()[conf.logging_level]
    # WriteLogger writes line and newline in one call: runner processes share the stream,
    # and print()'s two writes on an unbuffered stderr let their lines run together.
    logger = structlog.wrap_logger(
        structlog.WriteLogger(stream),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _renderer(conf.logging_format, stream),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    return logger.bind(app_id=conf.app_id, **context) if context else logger.bind(app_id=conf.app_id)


class TaskLogger:
    """``task.logger``: stdlib-style calls whose lines carry task id and invocation id."""

    def __init__(self, task: Any) -> None:
        self._task = task

    def _log(self, method: str, msg: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        from pynenc.context import current_execution

        execution = current_execution.get()
        invocation_id = execution.invocation_id if execution and execution.task_id == self._task.task_id else None
        text = msg % args if args else msg
        exc_info = kwargs.pop("exc_info", method == "exception")
        logger = self._task.app.logger.bind(task_id=self._task.task_id, invocation_id=invocation_id)
        getattr(logger, "error" if method == "exception" else method)(text, exc_info=exc_info, **kwargs)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._log("debug", msg, args, kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._log("info", msg, args, kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._log("warning", msg, args, kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._log("error", msg, args, kwargs)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._log("exception", msg, args, kwargs)

    def critical(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._log("critical", msg, args, kwargs)
