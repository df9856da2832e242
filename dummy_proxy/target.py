"""Pure checks of a request target: which requests the proxy may forward at all."""
from __future__ import annotations

from dataclasses import dataclass

# "%25" too: "%252e%252e" is ".." to anything that decodes twice (found by
# tests/reliability/test_fuzz_inputs.py); the API's paths never need a literal "%".
_ENCODED_FORBIDDEN = ("%2e", "%2f", "%5c", "%00", "%25")
# TRACE would echo the container token back; CONNECT would open a tunnel.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class Verdict:
    status: int          # 0 = forward, otherwise the error status to answer with
    reason: str = ""


FORWARD = Verdict(0)


def check_target(method: str, target: str) -> Verdict:
    """Decide on the raw request target (as sent on the request line)."""
    if method == "CONNECT":
        return Verdict(405, "CONNECT is not supported: this proxy only reaches the server API")
    if method not in METHODS:
        return Verdict(405, f"method {method} is not forwarded")
    if not target.startswith("/") or target.startswith("//"):
        return Verdict(400, "only origin-form request targets (/api/...) are accepted")
    path = target.split("?", 1)[0].split("#", 1)[0]
    lowered = path.lower()
    if "\\" in path or any(code in lowered for code in _ENCODED_FORBIDDEN):
        return Verdict(400, "encoded dots, slashes, backslashes or percent signs are not allowed "
                            "in the path")
    segments = path.split("/")[1:]
    if any(s in (".", "..") for s in segments):
        return Verdict(400, "dot segments are not allowed in the path")
    if any(s == "" for s in segments[:-1]):
        return Verdict(400, "empty path segments are not allowed")
    if path != "/api" and not path.startswith("/api/"):
        return Verdict(404, "only /api/... is forwarded")
    return FORWARD
