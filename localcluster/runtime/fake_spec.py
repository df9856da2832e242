"""What a fake container does (pure): how long it "runs" and how it ends, from its pod's
annotations and its image's registry entry, in the manner of kwok's stages.

Annotations (values are strings, as every annotation):

- ``pod-complete.stage.localcluster.dev/delay``: how long the container runs, a Go duration
  (``500ms``, ``2s``, ``1m30s``; ``0`` = exits at once, the default);
- ``pod-complete.stage.localcluster.dev/exit-code``: its exit code, 0-255 (default 0);
- ``pod-complete.stage.localcluster.dev/oom-killed``: ``"true"`` ends it as the kernel's OOM
  killer would: exit 137, reason OOMKilled (the exit code is then ignored);
- ``pod-complete.stage.localcluster.dev/progress-steps``: N progress lines appended to its
  ``$PROGRESS_FILE`` evenly over the delay, the last at its exit (default 0), so a live-channel
  sidecar has progress to publish;
- ``pod-complete.stage.localcluster.dev/gate``: an absolute path of a folder on the cluster's
  host: the container marks ``<gate>/started/<container id>`` when it starts and waits until
  ``<gate>/open`` exists before its delay begins, so a benchmark can release thousands at once.

A key suffixed with ``.<container name>`` (``.../exit-code.main``) applies to that container only
and wins over the pod-wide key. Native sidecars (init containers with ``restartPolicy: Always``)
take only their own suffixed keys and otherwise run until stopped: a pod-wide delay would make
them crash-loop. The image's ``fake:`` mapping in the registry gives defaults under the same
names. A value that does not parse fails the container's creation (`FakeSpecError`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

PREFIX = "pod-complete.stage.localcluster.dev/"
FIELDS = ("delay", "exit-code", "oom-killed", "progress-steps", "gate")
OOM_EXIT_CODE = 137
MAX_PROGRESS_STEPS = 10_000

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class FakeSpecError(ValueError):
    """A fake-runtime setting does not parse."""


@dataclass(frozen=True)
class FakeInput:
    """What the kubelet tells the fake runtime about one container."""

    name: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # parsed, see registry_defaults
    native_sidecar: bool = False


@dataclass(frozen=True)
class FakePlan:
    delay: float | None  # seconds; None: runs until stopped
    exit_code: int = 0
    oom_killed: bool = False
    progress_steps: int = 0
    gate: str | None = None  # a folder: wait for <gate>/open before the delay

    @property
    def reason(self) -> str:
        if self.oom_killed:
            return "OOMKilled"
        return "Completed" if self.exit_code == 0 else "Error"


def parse_duration(text: str) -> float:
    """Seconds of a Go duration ("500ms", "2s", "1m30s", "0"); no sign, a unit on every part."""
    s = str(text).strip()
    if s == "0":
        return 0.0
    if not s:
        raise FakeSpecError("empty duration")
    total, pos = 0.0, 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise FakeSpecError(f"invalid duration {text!r} (expected e.g. 500ms, 2s, 1m30s)")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total


def parse_exit_code(text: str) -> int:
    s = str(text).strip()
    if not s.isdigit() or int(s) > 255:
        raise FakeSpecError(f"invalid exit code {text!r} (expected 0-255)")
    return int(s)


def parse_bool(text: str) -> bool:
    s = str(text).strip().lower()
    if s not in ("true", "false"):
        raise FakeSpecError(f"invalid boolean {text!r} (expected \"true\" or \"false\")")
    return s == "true"


def parse_steps(text: str) -> int:
    s = str(text).strip()
    if not s.isdigit() or int(s) > MAX_PROGRESS_STEPS:
        raise FakeSpecError(f"invalid step count {text!r} (expected 0-{MAX_PROGRESS_STEPS})")
    return int(s)


def parse_gate(text: str) -> str:
    s = str(text).strip()
    if not s.startswith("/") or "\0" in s:
        raise FakeSpecError(f"invalid gate {text!r} (expected an absolute folder path)")
    return s


_PARSERS = {"delay": parse_duration, "exit-code": parse_exit_code, "oom-killed": parse_bool,
            "progress-steps": parse_steps, "gate": parse_gate}


def registry_defaults(value: Any) -> dict[str, Any] | None:
    """The ``fake:`` value of a registry entry: None (not fake), or its parsed defaults
    (``true`` = none). Raises FakeSpecError."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, dict):
        raise FakeSpecError(f"fake must be true or a mapping of {', '.join(FIELDS)}")
    unknown = sorted(set(map(str, value)) - set(FIELDS))
    if unknown:
        raise FakeSpecError(f"fake: unknown keys {unknown} (known: {', '.join(FIELDS)})")
    out = {}
    for key, raw in value.items():
        if isinstance(raw, bool):  # YAML true/false for oom-killed
            raw = "true" if raw else "false"
        try:
            out[str(key)] = _PARSERS[str(key)](str(raw))
        except FakeSpecError as e:
            raise FakeSpecError(f"fake: {key}: {e}") from None
    return out


def plan(inp: FakeInput) -> FakePlan:
    """The container's plan; raises FakeSpecError naming the annotation that does not parse."""
    values: dict[str, Any] = dict(inp.defaults)
    for name in FIELDS:
        keys = [f"{PREFIX}{name}.{inp.name}"]
        if not inp.native_sidecar:
            keys.insert(0, f"{PREFIX}{name}")
        for key in keys:  # the container's own key last: it wins
            if key in inp.annotations:
                try:
                    values[name] = _PARSERS[name](inp.annotations[key])
                except FakeSpecError as e:
                    raise FakeSpecError(f"annotation {key}: {e}") from None
    delay = values.get("delay", None if inp.native_sidecar else 0.0)
    oom = bool(values.get("oom-killed", False))
    code = OOM_EXIT_CODE if oom else int(values.get("exit-code", 0))
    return FakePlan(delay=delay, exit_code=code, oom_killed=oom,
                    progress_steps=int(values.get("progress-steps", 0)),
                    gate=values.get("gate"))


def is_live_sidecar(argv: list[str]) -> bool:
    """The node's live-channel sidecar (``python -m node sidecar`` or ``-m node.sidecar``):
    the fake runtime hosts a real one for it instead of faking it."""
    for i, arg in enumerate(argv):
        if arg == "-m" and (argv[i + 1:i + 2] == ["node.sidecar"]
                            or argv[i + 1:i + 3] == ["node", "sidecar"]):
            return True
    return False


def describe(seconds: float | None) -> str:
    """A duration as Go prints it, roughly (for log lines)."""
    if seconds is None:
        return "until stopped"
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"
