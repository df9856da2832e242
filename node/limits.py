"""The process's open-files limit (RLIMIT_NOFILE), raised at start.

Every run the live channel follows costs file descriptors (a ZeroMQ socket's mailbox and its TCP
connection, CONTRACTS §9); a soft limit of 1,024, common on Linux, would cap the node at a few
hundred followed runs while the hard limit usually allows far more.
"""
from __future__ import annotations

import logging

try:
    import resource
except ImportError:  # not on every platform: the node then runs with what it has
    resource = None

log = logging.getLogger(__name__)

# used when the hard limit is unlimited: Linux refuses an infinite soft limit for open files
UNLIMITED_TARGET = 1 << 20


def open_files_limit() -> int | None:
    """The soft limit now, or None when unknown or unlimited."""
    if resource is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def raise_open_files_limit() -> int | None:
    """Raise the soft limit to the hard one; return the soft limit afterwards (None when
    unknown). Never raises: a node that cannot raise it still starts, with what it has."""
    if resource is None:
        return None
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
        if soft == resource.RLIM_INFINITY or soft >= target:
            log.info("open files limit: %s (hard %s)", _show(soft), _show(hard))
            return open_files_limit()
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as e:
        log.warning("open files limit not raised (%s); the live channel follows fewer runs", e)
        return open_files_limit()
    log.info("open files limit raised from %s to %s (hard %s)", _show(soft), _show(target),
             _show(hard))
    return target


def _show(value: int) -> str:
    return "unlimited" if resource is not None and value == resource.RLIM_INFINITY else str(value)
