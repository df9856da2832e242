"""The dummy server's exception tree; HTTP and Socket.IO handlers translate it at the boundary."""
from __future__ import annotations


class ServerError(Exception):
    """Base class of every error the dummy server raises on purpose."""

    status = 500


class ConfigError(ServerError):
    """The configuration file or environment is unusable."""


class BadRequest(ServerError):
    """Input that fails validation; the message says what and where."""

    status = 400


class Unauthorized(ServerError):
    status = 401


class Forbidden(ServerError):
    status = 403


class NotFound(ServerError):
    status = 404


class Conflict(ServerError):
    status = 409


class TooLarge(ServerError):
    status = 413


class TokenError(Unauthorized):
    """A container token that is malformed, forged or expired."""
