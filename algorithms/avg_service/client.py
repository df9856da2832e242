"""A small client for the companion query service at SERVICE_URL (standard library only)."""
from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping

from algorithms.common.errors import AlgorithmError, EnvError

log = logging.getLogger(__name__)

CONNECT_RETRY_SECONDS = 5.0  # the service is ready before we start; this only covers a blip
REQUEST_TIMEOUT = 30.0


class ServiceError(AlgorithmError):
    """The companion service could not be reached or refused the query."""

    exit_code = 4


def service_url(environ: Mapping[str, str]) -> str:
    url = environ.get("SERVICE_URL", "").strip().rstrip("/")
    if not url:
        raise EnvError("SERVICE_URL is not set: this algorithm needs a companion service "
                       "(the task's 'service', e.g. the v6-demo/query-service image)")
    if not url.startswith("http://"):
        raise EnvError(f"SERVICE_URL must be an http:// URL, got {url[:80]!r}")
    return url


class ServiceClient:
    def __init__(self, base_url: str, retry_seconds: float = CONNECT_RETRY_SECONDS,
                 clock=time.monotonic, sleep=time.sleep) -> None:
        self.base_url = base_url
        self.retry_seconds = retry_seconds
        self.clock, self.sleep = clock, sleep
        self.first_request_at: float | None = None  # monotonic, for the logs

    def get(self, path: str, **query: str) -> dict:
        url = self.base_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        deadline = self.clock() + self.retry_seconds
        delay = 0.1
        while True:
            if self.first_request_at is None:
                self.first_request_at = self.clock()
            try:
                with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT) as resp:
                    return _json(resp.read(), url)
            except urllib.error.HTTPError as e:
                # the service answered: never retried, its message says what is wrong
                body = _json(e.read(), url, strict=False)
                raise ServiceError(f"GET {url} answered {e.code}: "
                                   f"{body.get('error', 'no reason given')}") from e
            except (urllib.error.URLError, ConnectionError) as e:
                reason = getattr(e, "reason", e)
                if not isinstance(reason, ConnectionError) or self.clock() >= deadline:
                    raise ServiceError(f"GET {url} failed: {reason}") from e
                log.warning("service not reachable (%s); retrying in %.1fs", reason, delay)
                self.sleep(delay)
                delay = min(delay * 2, 1.0)


def _json(data: bytes, url: str, strict: bool = True) -> dict:
    try:
        value = json.loads(data)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        if strict:
            raise ServiceError(f"GET {url}: the answer is not a JSON object")
        return {}
    return value
