import subprocess
import sys

import pytest

from dummy_server.config import SECRET_ENV, load_config
from dummy_server.errors import ConfigError
from dummy_server.testing import REPO

GOOD = """
token_secret: a-long-enough-secret-123
nodes: [{id: node-a, api_key: node-a-key-1}]
researchers: [{name: alice, api_key: alice-key-1}]
"""


def test_example_config_loads_and_repr_hides_keys():
    config = load_config(REPO / "dummy_server" / "server_config.yaml", env={})
    assert config.node_ids == ["node-a", "node-b"]
    assert config.database == REPO / "dummy_server" / "v6-server.sqlite"
    assert "demo-only" not in repr(config)


def test_env_secret_wins(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)
    assert load_config(path, env={SECRET_ENV: "from-the-environment-0123"}).token_secret == \
        b"from-the-environment-0123"


@pytest.mark.parametrize("text, message", [
    (GOOD.replace("a-long-enough-secret-123", "short"), "token_secret"),
    (GOOD + "colour: red\n", "unknown config keys: colour"),
    (GOOD.replace("node-a-key-1", "short"), "nodes[0].api_key"),
    (GOOD.replace("id: node-a", "id: Node_A"), "nodes[0].id"),
    (GOOD.replace("alice-key-1", "node-a-key-1"), "both by a node and by a researcher"),
    (GOOD + "port: -1\n", "port"),
    ("[1, 2]", "mapping"),
])
def test_bad_configs_are_refused_clearly(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path, env={})


def test_server_exits_2_on_a_bad_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("colour: red\n")
    done = subprocess.run([sys.executable, "-m", "dummy_server", "--config", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "unknown config keys: colour" in done.stderr
