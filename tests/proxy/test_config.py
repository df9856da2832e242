import pytest

from dummy_proxy.config import load_config
from dummy_proxy.errors import ConfigError
from dummy_server.testing import REPO


def test_example_config_and_overrides():
    config = load_config(REPO / "dummy_proxy" / "proxy_config.yaml", listen="127.0.0.1:0",
                         upstream="http://127.0.0.1:5001/")
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 0)
    assert config.upstream == "http://127.0.0.1:5001"
    assert config.max_body_bytes == 10485760
    assert (config.header_timeout_seconds, config.idle_timeout_seconds,
            config.body_timeout_seconds, config.max_connections) == (10, 60, 30, 256)


@pytest.mark.parametrize("kwargs, message", [
    ({"listen": "8080"}, "HOST:PORT"),
    ({"upstream": "ftp://x"}, "upstream"),
    ({"upstream": "http://x/api"}, "only scheme, host and port"),
    ({"upstream": "http://user:pw@x"}, "only scheme, host and port"),
    ({"max_body_bytes": 0}, "max_body_bytes"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, **kwargs)


@pytest.mark.parametrize("key, value", [("header_timeout_seconds", 0), ("idle_timeout_seconds", -1),
                                        ("body_timeout_seconds", "soon"), ("max_connections", 0)])
def test_bad_client_limits_are_refused(tmp_path, key, value):
    path = tmp_path / "proxy_config.yaml"
    path.write_text(f"{key}: {value!r}\n")
    with pytest.raises(ConfigError, match=key):
        load_config(path)
