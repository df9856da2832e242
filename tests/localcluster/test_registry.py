"""The image registry: loading, placeholder expansion, reference matching and its errors."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from localcluster.runtime.registry import (DEFAULT_IMAGES_FILE, REPO_ROOT, ImageNotFound,
                                   InvalidImageName, Registry, RegistryConfigError,
                                   parse_reference)


def _write(tmp_path: Path, text: str, name: str = "images.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_project_registry_has_every_project_image_running_its_module():
    reg = Registry.load([DEFAULT_IMAGES_FILE], python="/py", repo=Path("/repo"))
    expected = {"v6-demo/avg": "algorithms.avg", "v6-demo/diagnostics": "algorithms.diagnostics",
                "v6-demo/node": "node", "v6-demo/server": "dummy_server",
                "v6-demo/proxy": "dummy_proxy"}
    for ref, module in expected.items():
        img = reg.resolve(ref)
        assert img.entrypoint == ("/py", "-m", module)
        assert img.uid == 1000
        assert img.workdir == "/repo"
        assert img.env["PYTHONPATH"] == "/repo"


def test_placeholders_default_to_this_interpreter_and_repo(tmp_path):
    p = _write(tmp_path, 'images:\n  a/b:\n    entrypoint: ["{python}", "{repo}/x.py"]\n')
    img = Registry.load([p]).resolve("a/b")
    assert img.entrypoint == (sys.executable, f"{REPO_ROOT}/x.py")
    assert img.uid == 0 and img.gid is None  # no USER: root, as an image without one


def test_untagged_key_matches_latest_but_tagged_key_matches_exactly(tmp_path):
    p = _write(tmp_path, "images:\n  a/b:\n    cmd: [x]\n  c/d:1.0:\n    cmd: [y]\n")
    reg = Registry.load([p])
    assert reg.resolve("a/b:latest").cmd == ("x",)
    assert reg.resolve("a/b").cmd == ("x",)
    assert reg.resolve("c/d:1.0").cmd == ("y",)
    for ref in ("a/b:2.0", "c/d", "c/d:latest", "e/f"):
        with pytest.raises(ImageNotFound, match="pull access denied"):
            reg.resolve(ref)


def test_docker_io_library_prefix_is_the_same_image(tmp_path):
    reg = Registry.load([_write(tmp_path, "images:\n  busybox:\n    cmd: [sh]\n")])
    assert reg.resolve("docker.io/library/busybox:latest").cmd == ("sh",)


def test_later_files_override_earlier_ones(tmp_path):
    a = _write(tmp_path, "images:\n  a/b:\n    cmd: [one]\n", "a.yaml")
    b = _write(tmp_path, "images:\n  a/b:\n    cmd: [two]\n    user: '5:6'\n", "b.yaml")
    img = Registry.load([a, b]).resolve("a/b")
    assert (img.cmd, img.uid, img.gid) == (("two",), 5, 6)


def test_image_id_is_stable_and_differs_between_entries(tmp_path):
    p = _write(tmp_path, "images:\n  a/b:\n    cmd: [x]\n  a/c:\n    cmd: [x]\n")
    reg = Registry.load([p])
    assert reg.resolve("a/b").image_id == Registry.load([p]).resolve("a/b").image_id
    assert reg.resolve("a/b").image_id != reg.resolve("a/c").image_id
    assert reg.resolve("a/b").image_id.startswith("a/b@sha256:")


@pytest.mark.parametrize("ref", ["", "UPPER/case", "a//b", "a/b:", "a b", "-a/b", "a/b@sha256:xyz"])
def test_unparsable_references_are_invalid_image_names(ref):
    with pytest.raises(InvalidImageName, match="invalid reference format"):
        parse_reference(ref)


@pytest.mark.parametrize("ref,name,tag", [("a/b", "a/b", None), ("a/b:1.2", "a/b", "1.2"),
                                          ("localhost:5000/x/y:t", "localhost:5000/x/y", "t")])
def test_valid_references_parse(ref, name, tag):
    parsed = parse_reference(ref)
    assert (parsed.name, parsed.tag) == (name, tag)


@pytest.mark.parametrize("text,match", [
    ("[]", "expected a mapping"),
    ("images:\n  a/b: {entrypoint: x}\n", "list of strings"),
    ("images:\n  a/b: {cmd: [x], user: root}\n", "numeric"),
    ("images:\n  a/b: {cmd: [x], extra: 1}\n", "unknown keys"),
    ("images:\n  a/b: {}\n", "entrypoint or a cmd"),
    ("images:\n  'Bad Name': {cmd: [x]}\n", "not a valid image reference"),
    ("images: [\n", "not valid YAML"),
])
def test_malformed_registry_files_are_refused_with_the_reason(tmp_path, text, match):
    with pytest.raises(RegistryConfigError, match=match):
        Registry.load([_write(tmp_path, text)])


def test_missing_registry_file_is_a_config_error(tmp_path):
    with pytest.raises(RegistryConfigError, match="cannot read"):
        Registry.load([tmp_path / "nope.yaml"])
