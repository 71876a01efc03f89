"""The "fastattach" logger, without importing logging for a line nobody could see.

Importing logging costs a process that has not ~2.5 MB of RSS, more than listening itself.
Until the application imports logging it cannot have configured a handler, and logging's
last-resort handler prints only warnings and worse: so debug and info lines are dropped
while logging is not imported, and warnings and worse import it and go through it.
"""

from __future__ import annotations

import sys


class LazyLogger:
    """The subset of logging.Logger the listener uses, with the same meaning."""

    def __init__(self, name: str):
        self.name = name

    def _logger(self):
        import logging

        return logging.getLogger(self.name)

    # stacklevel=2: the record names our caller's line, as a plain logger call would.
    def debug(self, msg: str, *args, **kwargs) -> None:
        if "logging" in sys.modules:
            self._logger().debug(msg, *args, stacklevel=2, **kwargs)

    def info(self, msg: str, *args, **kwargs) -> None:
        if "logging" in sys.modules:
            self._logger().info(msg, *args, stacklevel=2, **kwargs)

    def warning(self, msg: str, *args, **kwargs) -> None:
        self._logger().warning(msg, *args, stacklevel=2, **kwargs)

    def error(self, msg: str, *args, **kwargs) -> None:
        self._logger().error(msg, *args, stacklevel=2, **kwargs)

    def exception(self, msg: str, *args, **kwargs) -> None:
        self._logger().exception(msg, *args, stacklevel=2, **kwargs)


logger = LazyLogger("fastattach")
