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
