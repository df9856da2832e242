import base64
import json

import pytest

from dummy_server import tokens
from dummy_server.errors import TokenError

SECRET = b"unit-test-secret-0123456789"
CLAIMS = tokens.Claims(task_id=7, run_id=11, node_id="node-a", exp=1000)


def test_sign_then_verify_returns_the_claims():
    assert tokens.verify(SECRET, tokens.sign(SECRET, CLAIMS), now=999) == CLAIMS


def test_expired_token_is_refused():
    with pytest.raises(TokenError, match="expired"):
        tokens.verify(SECRET, tokens.sign(SECRET, CLAIMS), now=1000)


def test_other_secret_is_refused():
    with pytest.raises(TokenError, match="signature"):
        tokens.verify(b"another-secret-0123456789", tokens.sign(SECRET, CLAIMS), now=0)


def test_tampered_payload_is_refused():
    body, mac = tokens.sign(SECRET, CLAIMS).split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["task_id"] = 8
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError, match="signature"):
        tokens.verify(SECRET, f"{forged}.{mac}", now=0)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", ".x", "x.", "!!!.???", "a" * 10 + ".%%"])
def test_malformed_tokens_are_refused(token):
    with pytest.raises(TokenError):
        tokens.verify(SECRET, token, now=0)


def test_signed_non_json_payload_is_refused():
    import hashlib
    import hmac
    body = base64.urlsafe_b64encode(b"not json").rstrip(b"=").decode()
    mac = base64.urlsafe_b64encode(
        hmac.new(SECRET, body.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    with pytest.raises(TokenError, match="payload"):
        tokens.verify(SECRET, f"{body}.{mac}", now=0)
