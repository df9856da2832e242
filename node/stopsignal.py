"""A stop request raised by signals, safe to set from a signal handler.

A signal handler must take no lock. `threading.Event.set()` takes the Event's lock, and a
second signal that arrives while the first handler holds it (SIGTERM sent to a process group,
Ctrl-C pressed twice) runs the handler again in the same thread, which then waits forever for
the lock it holds: the process ignores SIGTERM until the kubelet's SIGKILL. Here the handler
sets a flag and writes one byte to a pipe that `wait()` selects on.
"""
from __future__ import annotations

import os
import select
import signal


class StopSignal:
    def __init__(self) -> None:
        self._set = False
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)

    def install(self, *signums: int) -> "StopSignal":
        """Handle these signals (default SIGTERM and SIGINT) by setting the flag."""
        for signum in signums or (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handler)
        return self

    def _handler(self, signum, frame) -> None:
        self.set()

    def set(self) -> None:
        self._set = True
        try:
            os.write(self._w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe holds a wake-up already (or is closed): the flag is what counts

    def fileno(self) -> int:
        """Readable once set: for a poll (select, zmq.Poller) to wake on a stop request."""
        return self._r

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """True once set; False when `timeout` seconds pass first."""
        if self._set:
            return True
        try:
            select.select([self._r], [], [], timeout)
        except (OSError, ValueError):
            pass  # closed
        return self._set

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
