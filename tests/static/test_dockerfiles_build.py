"""The project's images build from its Dockerfiles (`make images-build`: base image made locally
when it cannot be pulled, then every image) and run: each answers a smoke command, runs as uid
1000, and neither trusts nor records a CA certificate the build was given for pip. Needs a
Docker engine; skipped with the reason otherwise, except in CI as root, which must build them."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.static.support import REPO

DOCKER = shutil.which("docker")
BUILD = REPO / "localcluster" / "docker" / "build-images.sh"
# The smoke command of each image (its entrypoint's arguments) and what its output must show.
SMOKE = {"v6-demo/node": (["--help"], "usage: python -m node"),
         "v6-demo/server": (["--help"], "usage: python -m dummy_server"),
         "v6-demo/proxy": (["--help"], "usage: python -m dummy_proxy"),
         "v6-demo/avg": (["--help"], "usage: python -m algorithms.avg")}
# Modules each image's pip step must have installed (import names).
IMPORTS = {"v6-demo/node": "kubernetes, socketio, websocket, requests, yaml, zmq, node.app",
           "v6-demo/server": "aiohttp, socketio, yaml, dummy_server.app",
           "v6-demo/proxy": "aiohttp, yaml, dummy_proxy.proxy"}


def _docker_unavailable() -> str | None:
    if DOCKER is None:
        return "the docker CLI is not installed"
    r = subprocess.run([DOCKER, "info"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"the Docker engine does not answer: {r.stderr.strip()[:200]}"
    return None


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def images() -> list[str]:
    why = _docker_unavailable()
    if why and os.environ.get("CI") and os.geteuid() == 0:
        pytest.fail(f"CI must build the images, but {why} (.ci/run: apt-get install docker.io "
                    f"debootstrap; localcluster/docker/start-dockerd.sh)")
    if why:
        pytest.skip(why)
    # Cached layers make this seconds; a machine without the base image first spends about a
    # minute on debootstrap.
    r = subprocess.run(["make", "-s", "images-build"], cwd=REPO, capture_output=True, text=True,
                       timeout=1500, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"make images-build failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    refs = subprocess.run([str(BUILD), "--list"], capture_output=True, text=True,
                          check=True).stdout.split()
    return refs


@pytest.mark.timeout(1800)
def test_every_image_is_built(images):
    names = {ref.rsplit(":", 1)[0] for ref in images}
    dockerfiles = {p.parent.name for p in (REPO / "algorithms").glob("*/Dockerfile")}
    assert {"v6-demo/node", "v6-demo/server", "v6-demo/proxy", "v6-demo/avg",
            "v6-demo/diagnostics"} <= names
    assert len(names) == 3 + len(dockerfiles)  # one per algorithm Dockerfile
    for ref in images:
        assert docker("image", "inspect", ref).returncode == 0, ref


@pytest.mark.parametrize("image", sorted(SMOKE))
def test_image_answers_its_smoke_command(images, image):
    args, expect = SMOKE[image]
    r = docker("run", "--rm", "--network", "none", "--read-only", image, *args)
    assert expect in r.stdout + r.stderr, (r.returncode, r.stdout, r.stderr)


@pytest.mark.parametrize("image", sorted(IMPORTS))
def test_image_has_its_dependencies_and_runs_as_uid_1000(images, image):
    code = f"import os, {IMPORTS[image]}; print(os.getuid(), os.getgid())"
    r = docker("run", "--rm", "--network", "none", "--read-only", "--entrypoint", "python",
               image, "-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1000", "1000"]


def _local_cas() -> list[str]:
    """Base64 bodies of the extra CAs the build passes to pip (this machine's local CAs)."""
    bodies = []
    for path in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        lines = path.read_text().split("-----")
        if len(lines) >= 3:
            bodies.append("".join(lines[2].split())[:64])
    return bodies


@pytest.mark.parametrize("image", sorted(IMPORTS))
def test_build_ca_certificates_are_not_kept_in_the_image(images, image):
    cas = _local_cas()
    if not cas:
        pytest.skip("this machine has no local CA certificates to pass to the build")
    script = ("import glob, ssl\n"
              "paths = glob.glob('/etc/ssl/certs/*') + glob.glob('/tmp/*') + "
              "glob.glob('/usr/local/lib/python3*/site-packages/**/*.pem', recursive=True)\n"
              "text = ''\n"
              "for p in paths:\n"
              "    try: text += ''.join(open(p).read().split())\n"
              "    except (OSError, UnicodeDecodeError): pass\n"
              "print(text)\n")
    r = docker("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", script)
    assert r.returncode == 0, r.stderr
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image)
    assert history.returncode == 0, history.stderr
    recorded = "".join(history.stdout.split())
    for body in cas:
        assert body not in r.stdout, f"{image} keeps a CA certificate it was built with"
        assert body not in recorded, f"{image}'s history records a CA certificate"
