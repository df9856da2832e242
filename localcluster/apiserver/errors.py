"""API errors: each becomes a metav1 Status object on the wire."""
from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error the API server answers with a Status object (code, reason, message)."""

    def __init__(self, code: int, reason: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                               "status": "Failure", "message": self.message,
                               "reason": self.reason, "code": self.code}
        if self.details is not None:  # an empty one is sent too (a 403 on a path: "details":{})
            out["details"] = self.details
        return out


class Gone(ApiError):
    """410: the requested resourceVersion is older than the kept history."""

    def __init__(self, message: str) -> None:
        super().__init__(410, "Expired", message)


def _details(res: Any, name: str | None) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": res.plural}
    if res.group:
        d["group"] = res.group
    if name:
        d["name"] = name
    return d


def not_found(res: Any, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res} "{name}" not found', _details(res, name))


def already_exists(res: Any, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{res} "{name}" already exists', _details(res, name))


def conflict(res: Any, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res} "{name}": {why}',
                    _details(res, name))


def invalid(res: Any, name: str, causes: list[dict[str, str]]) -> ApiError:
    """422 Invalid; causes are {"field", "message", "reason"} like metav1.StatusCause."""
    summary = ", ".join(f'{c["field"]}: {c["message"]}' for c in causes)
    d = _details(res, name)
    d["causes"] = causes
    return ApiError(422, "Invalid", f'{res.kind} "{name}" is invalid: {summary}', d)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, "Forbidden", message)
