import pytest

from dummy_proxy.target import check_target


@pytest.mark.parametrize("target", ["/api", "/api/", "/api/version", "/api/task/3?x=%2F&y=..",
                                    "/api/run/1?node_id=node-a", "/api/a%20b"])
def test_forwarded(target):
    assert check_target("GET", target).status == 0


@pytest.mark.parametrize("method, target, status", [
    ("CONNECT", "example.com:443", 405),
    ("CONNECT", "/api/version", 405),
    ("TRACE", "/api/version", 405),
    ("PROPFIND", "/api/version", 405),
    ("GET", "http://example.com/api/version", 400),
    ("GET", "example.com:80", 400),
    ("GET", "*", 400),
    ("GET", "//example.com/api/version", 400),
    ("GET", "/api/../admin", 400),
    ("GET", "/api/./version", 400),
    ("GET", "/api/%2e%2e/admin", 400),
    ("GET", "/api/%2E%2E/admin", 400),
    ("GET", "/api/x%2fy", 400),
    ("GET", "/api/x%5cy", 400),
    ("GET", "/api/x\\..\\y", 400),
    ("GET", "/api//version", 400),
    ("GET", "/apix", 404),
    ("GET", "/other", 404),
    ("GET", "/", 404),
])
def test_refused(method, target, status):
    assert check_target(method, target).status == status
