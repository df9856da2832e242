"""The fake runtime's settings (pure): durations, annotations, per-container keys, registry
defaults, and how the node's live sidecar is recognised."""
from __future__ import annotations

import pytest

from localcluster.runtime.fake_spec import (PREFIX, FakeInput, FakePlan, FakeSpecError,
                                            is_live_sidecar, parse_duration, plan,
                                            registry_defaults)
from localcluster.runtime.registry import Registry, RegistryConfigError


@pytest.mark.parametrize("text, seconds", [
    ("0", 0.0), ("2s", 2.0), ("500ms", 0.5), ("1m", 60.0), ("1m30s", 90.0), ("1.5h", 5400.0),
    ("250us", 0.00025), ("10µs", 0.00001), ("3ns", 3e-9), (" 2s ", 2.0), (".5s", 0.5)])
def test_go_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "2", "-1s", "2 s", "2sec", "s", "1d", "1m-3s", "abc"])
def test_bad_durations(text):
    with pytest.raises(FakeSpecError, match="duration"):
        parse_duration(text)


def test_defaults_exit_zero_at_once():
    assert plan(FakeInput("main")) == FakePlan(delay=0.0, exit_code=0)
    assert plan(FakeInput("main")).reason == "Completed"


def test_pod_annotations():
    p = plan(FakeInput("main", {PREFIX + "delay": "2s", PREFIX + "exit-code": "3",
                                "unrelated": "x"}))
    assert (p.delay, p.exit_code, p.reason, p.oom_killed) == (2.0, 3, "Error", False)


def test_oom_killed_is_137_whatever_the_exit_code():
    p = plan(FakeInput("main", {PREFIX + "oom-killed": "True", PREFIX + "exit-code": "3"}))
    assert (p.exit_code, p.reason, p.oom_killed) == (137, "OOMKilled", True)
    assert not plan(FakeInput("main", {PREFIX + "oom-killed": "false"})).oom_killed


def test_a_container_key_wins_over_the_pod_key():
    notes = {PREFIX + "exit-code": "1", PREFIX + "exit-code.main": "4", PREFIX + "delay": "1s"}
    assert plan(FakeInput("main", notes)).exit_code == 4
    other = plan(FakeInput("other", notes))
    assert (other.exit_code, other.delay) == (1, 1.0)


def test_native_sidecars_run_until_stopped_and_take_only_their_own_keys():
    notes = {PREFIX + "delay": "1s", PREFIX + "exit-code": "5"}
    assert plan(FakeInput("svc", notes, native_sidecar=True)) == FakePlan(delay=None)
    own = plan(FakeInput("svc", {**notes, PREFIX + "delay.svc": "3s"}, native_sidecar=True))
    assert own.delay == 3.0


@pytest.mark.parametrize("key, value, words", [
    ("delay", "2", "missing|expected e.g."), ("exit-code", "256", "0-255"),
    ("exit-code", "-1", "0-255"), ("oom-killed", "yes", "boolean"),
    ("progress-steps", "many", "step count"), ("delay.main", "soon", "duration"),
    ("gate", "relative/dir", "absolute folder")])
def test_invalid_values_name_the_annotation(key, value, words):
    with pytest.raises(FakeSpecError, match=rf"annotation {PREFIX}{key}: .*({words})"):
        plan(FakeInput("main", {PREFIX + key: value}))


def test_registry_defaults_and_annotations_over_them():
    defaults = registry_defaults({"delay": "2s", "exit-code": 3, "oom-killed": False,
                                  "progress-steps": 4})
    assert defaults == {"delay": 2.0, "exit-code": 3, "oom-killed": False, "progress-steps": 4}
    p = plan(FakeInput("main", {PREFIX + "exit-code": "0"}, defaults))
    assert (p.delay, p.exit_code, p.progress_steps) == (2.0, 0, 4)
    assert registry_defaults(True) == {} and registry_defaults(None) is None
    assert registry_defaults(False) is None
    with pytest.raises(FakeSpecError, match="unknown keys"):
        registry_defaults({"delay": "1s", "sleep": "2s"})
    with pytest.raises(FakeSpecError, match="fake: delay"):
        registry_defaults({"delay": "forever"})


def test_registry_entries_marked_fake(tmp_path):
    path = tmp_path / "images.yaml"
    path.write_text("images:\n"
                    "  test/fake: {fake: true}\n"
                    "  test/slow: {fake: {delay: 2s, exit-code: 1}, user: 1000}\n"
                    "  test/real: {entrypoint: [sh]}\n")
    registry = Registry.load([path])
    assert registry.has_fakes()
    assert registry.resolve("test/fake").fake == {}
    assert registry.resolve("test/slow:latest").fake == {"delay": 2.0, "exit-code": 1}
    assert registry.resolve("test/real").fake is None
    assert not Registry.load([]).has_fakes()
    path.write_text("images:\n  test/bad: {fake: {delay: soon}}\n")
    with pytest.raises(RegistryConfigError, match="test/bad.*fake: delay.*duration"):
        Registry.load([path])
    path.write_text("images:\n  test/none: {user: 1000}\n")
    with pytest.raises(RegistryConfigError, match="needs an entrypoint or a cmd"):
        Registry.load([path])


def test_real_image_ids_do_not_change():
    # the image id is a digest of the entry: adding the fake field must not move real ones
    from localcluster.runtime.registry import DEFAULT_IMAGES_FILE
    image = Registry.load([DEFAULT_IMAGES_FILE], python="/py", repo="/repo").resolve(
        "v6-demo/avg")
    assert image.fake is None
    assert image.image_id == ("v6-demo/avg@sha256:"
                              "5ac7f246fcfe2fd13684fab6a17f9a2042d50c33150be6bff9aab559d001439c")


@pytest.mark.parametrize("argv, live", [
    (["/py", "-m", "node", "sidecar"], True), (["python", "-m", "node.sidecar"], True),
    (["/py", "-m", "node"], False), (["/py", "-m", "node", "monitor"], False),
    (["sidecar"], False), ([], False)])
def test_live_sidecar_recognised_by_its_command(argv, live):
    assert is_live_sidecar(argv) is live


def test_gate_from_the_registry_or_an_annotation():
    assert plan(FakeInput("main", {}, registry_defaults({"gate": "/tmp/g"}))).gate == "/tmp/g"
    assert plan(FakeInput("main", {PREFIX + "gate": "/srv/x"})).gate == "/srv/x"
    assert plan(FakeInput("main")).gate is None
