"""Container tokens: ``base64url(json payload) "." base64url(HMAC-SHA256(secret, payload))``.

Pure functions; the clock is passed in so tests need no sleeping.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

from .errors import TokenError


@dataclass(frozen=True)
class Claims:
    task_id: int
    run_id: int
    node_id: str
    exp: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, claims: Claims) -> str:
    payload = json.dumps({"task_id": claims.task_id, "run_id": claims.run_id,
                          "node_id": claims.node_id, "exp": claims.exp},
                         separators=(",", ":"), sort_keys=True).encode()
    body = _b64(payload)
    mac = hmac.new(secret, body.encode("ascii"), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify(secret: bytes, token: str, now: float) -> Claims:
    """Return the claims of a valid token; raise TokenError saying why it is not valid."""
    parts = token.split(".")
    if len(parts) != 2 or not all(parts):
        raise TokenError("malformed token")
    body, mac_text = parts
    try:
        mac = _unb64(mac_text)
        body.encode("ascii")
    except (binascii.Error, ValueError, UnicodeError) as e:
        raise TokenError("malformed token") from e
    expected = hmac.new(secret, body.encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise TokenError("invalid token signature")
    try:
        data = json.loads(_unb64(body))
        claims = Claims(task_id=data["task_id"], run_id=data["run_id"],
                        node_id=data["node_id"], exp=data["exp"])
    except (binascii.Error, ValueError, KeyError, TypeError) as e:
        raise TokenError("malformed token payload") from e
    if not all(isinstance(v, int) and not isinstance(v, bool)
               for v in (claims.task_id, claims.run_id, claims.exp)):
        raise TokenError("malformed token payload")
    if claims.exp <= now:
        raise TokenError("token expired")
    return claims
