"""The exception tree of algorithm code; each class carries the process exit code it maps to.

Exit codes: 1 unexpected bug, 2 bad task input or env, 3 bad data, 4 server/proxy communication,
5 output could not be written.
"""
from __future__ import annotations


class AlgorithmError(Exception):
    """Base class: a failure with a message fit for the user (printed on stderr)."""

    exit_code = 1


class EnvError(AlgorithmError):
    """An expected environment variable is missing or malformed."""

    exit_code = 2


class InputError(AlgorithmError):
    """The task input (file or command-line arguments) is missing or invalid."""

    exit_code = 2


class DataError(AlgorithmError):
    """The database cannot be read or its content is unusable (missing column, bad value, empty)."""

    exit_code = 3


class ServerError(AlgorithmError):
    """Talking to the server through the proxy failed."""

    exit_code = 4

    def __init__(self, message: str, status: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status        # the HTTP status, when the server answered
        self.transient = transient  # worth retrying: unreachable, overloaded or restarting


class SubtaskError(ServerError):
    """A subtask did not complete (a run failed, or waiting for it timed out)."""


class OutputError(AlgorithmError):
    """The output file could not be written."""

    exit_code = 5
