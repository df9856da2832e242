"""Each project image (localcluster/images.yaml) has a Dockerfile that runs the same module as the
local registry entry, as a numeric non-root user, from files its .dockerignore lets in."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.static.support import REPO

DOCKERFILES = {"v6-demo/node": "node/Dockerfile", "v6-demo/server": "dummy_server/Dockerfile",
               "v6-demo/proxy": "dummy_proxy/Dockerfile", "v6-demo/avg": "algorithms/avg/Dockerfile",
               "v6-demo/diagnostics": "algorithms/diagnostics/Dockerfile",
               "v6-demo/avg-service": "algorithms/avg_service/Dockerfile",
               "v6-demo/query-service": "algorithms/query_service/Dockerfile"}


def registry() -> dict:
    return yaml.safe_load((REPO / "localcluster" / "images.yaml").read_text())["images"]


def instructions(path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [tuple(line.strip().split(None, 1)) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_every_project_image_has_a_dockerfile():
    assert set(registry()) == set(DOCKERFILES)


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_matches_the_local_registry(image):
    path = REPO / DOCKERFILES[image]
    steps = instructions(path)
    entrypoint = json.loads([arg for op, arg in steps if op == "ENTRYPOINT"][-1])
    local = registry()[image]["entrypoint"]
    assert entrypoint[1:] == local[1:] and entrypoint[0] == "python"
    user = [arg for op, arg in steps if op == "USER"][-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit()), user
    assert int(uid) == registry()[image]["user"]
    env = " ".join(arg for op, arg in steps if op == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # read-only root filesystem


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_copied_files_exist_and_pass_the_dockerignore(image):
    path = REPO / DOCKERFILES[image]
    ignore = (path.parent / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    assert ignore and "*" in ignore, "the context must start from nothing"
    for op, arg in instructions(path):
        if op == "COPY" and not arg.startswith("--from="):  # not from a build stage
            *sources, _dest = arg.split()
            for src in sources:
                assert (REPO / src).exists(), src
                assert any(src.rstrip("/") == a or src.startswith(a + "/") for a in allowed), src


# import name -> the distributions that provide it (any of them installed is enough; urllib3
# comes with kubernetes and requests)
PROVIDERS = {"kubernetes": {"kubernetes"}, "socketio": {"python-socketio[client]"}, "yaml": {"PyYAML"},
             "zmq": {"pyzmq"}, "aiohttp": {"aiohttp"}, "requests": {"requests"},
             "urllib3": {"kubernetes", "requests"}, "websocket": {"websocket-client"}}
PACKAGE_DIRS = {"v6-demo/node": "node", "v6-demo/server": "dummy_server", "v6-demo/proxy": "dummy_proxy"}
# test helpers inside the packages, never run in the images
NOT_IN_IMAGE = {"testing.py"}


def third_party_imports(package: str) -> set[str]:
    import ast
    import sys
    names = set()
    for path in (REPO / package).glob("*.py"):
        if path.name in NOT_IN_IMAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != package and n != "__future__"}


@pytest.mark.parametrize("image", sorted(PACKAGE_DIRS))
def test_image_installs_what_its_code_imports(image):
    steps = instructions(REPO / DOCKERFILES[image])
    installed = {w.strip('"') for op, arg in steps if op == "RUN" for w in arg.split()}
    for name in sorted(third_party_imports(PACKAGE_DIRS[image])):
        assert name in PROVIDERS, f"{image}: {name} is imported; add it to PROVIDERS and the Dockerfile"
        assert PROVIDERS[name] & installed, f"{image}: imports {name}, which the Dockerfile does not install"
