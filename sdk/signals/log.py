"""The signals logger, and warnings that are logged once per cause (a failing sensor would otherwise log on
every refresh)."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("tandem.signals")

_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(key: str, message: str, *args: object, exc_info: bool = False) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process, at debug level after."""
    with _warned_lock:
        first = key not in _warned
        _warned.add(key)
    log.log(logging.WARNING if first else logging.DEBUG, message, *args, exc_info=exc_info)
