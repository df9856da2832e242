"""Pod Security Standards as Kubernetes v1.30's pod-security-admission applies them, pure.

`evaluate(level_version, metadata, spec)` runs the checks (`podsecurity_checks`) a level and version select, in the
order the real evaluator runs them (baseline checks by id, then restricted checks by id; a
restricted check replaces the baseline check it tightens), and returns the failed ones with the
real reason and detail texts; `forbidden_detail` joins them as the admission's messages do:
``reason (detail), reason (detail)``.

`namespace_policy(labels)` reads ``pod-security.kubernetes.io/<mode>[-version]``; `label_causes`
are the errors the real admission answers for a namespace whose labels are not valid.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from localcluster.apiserver.admission.podsecurity_checks import CHECKS, CheckFn

Spec = dict[str, Any]
Meta = dict[str, Any]

LEVELS = ("privileged", "baseline", "restricted")
MODES = ("enforce", "audit", "warn")
LABEL_PREFIX = "pod-security.kubernetes.io/"
# The newest policy version this API server knows: "latest", and newer versions, mean this one.
LATEST = (1, 30)
_VERSION_RE = re.compile(r"v1\.(0|[1-9][0-9]*)")


@dataclass(frozen=True)
class LevelVersion:
    level: str
    version: tuple[int, int] | None = None  # None: "latest"

    def __str__(self) -> str:  # as api.LevelVersion.String(): "restricted:latest"
        v = "latest" if self.version is None else f"v{self.version[0]}.{self.version[1]}"
        return f"{self.level}:{v}"

    @property
    def effective(self) -> tuple[int, int]:
        return LATEST if self.version is None or self.version > LATEST else self.version


PRIVILEGED = LevelVersion("privileged")


@dataclass(frozen=True)
class Policy:
    enforce: LevelVersion = PRIVILEGED
    audit: LevelVersion = PRIVILEGED
    warn: LevelVersion = PRIVILEGED

    @property
    def fully_privileged(self) -> bool:
        return all(m.level == "privileged" for m in (self.enforce, self.audit, self.warn))


@dataclass(frozen=True)
class Violation:
    check: str  # the check's id, e.g. "allowPrivilegeEscalation"
    reason: str
    detail: str


# --------------------------------------------------------------------------- namespace labels
def _parse_version(value: str) -> tuple[int, int] | None:
    if value == "latest":
        return None
    m = _VERSION_RE.fullmatch(value)
    if m is None:
        raise ValueError('must be "latest" or of the form "v1.x"')
    return 1, int(m.group(1))


def namespace_policy(labels: dict | None) -> Policy:
    """The policy of a namespace's labels; unset modes are privileged:latest (the default
    admission configuration). An invalid level or version fails closed, as the real plugin
    does: restricted, latest."""
    labels = labels or {}
    modes = {}
    for mode in MODES:
        level = labels.get(LABEL_PREFIX + mode, "privileged")
        if level not in LEVELS:
            level = "restricted"
        try:
            version = _parse_version(labels.get(f"{LABEL_PREFIX}{mode}-version", "latest"))
        except ValueError:
            level, version = ("restricted", None) if mode == "enforce" else (level, None)
        modes[mode] = LevelVersion(level, version)
    return Policy(**modes)


def label_causes(labels: dict | None) -> list[dict[str, str]]:
    """The real admission refuses a namespace (422) whose pod-security labels do not parse."""
    causes = []
    for mode in MODES:
        for key in (LABEL_PREFIX + mode, f"{LABEL_PREFIX}{mode}-version"):
            value = (labels or {}).get(key)
            if value is None:
                continue
            if key.endswith("-version"):
                try:
                    _parse_version(value)
                    continue
                except ValueError as e:
                    problem = str(e)
            elif value in LEVELS:
                continue
            else:
                problem = "must be one of " + ", ".join(LEVELS)
            causes.append({"field": f"metadata.labels[{key}]", "reason": "FieldValueInvalid",
                           "message": f'Invalid value: "{value}": {problem}'})
    return causes


# --------------------------------------------------------------------------- evaluation
# the evaluator's order: baseline checks sorted by id, then restricted ones sorted by id
_ORDER = (sorted((c for c in CHECKS if c.level == "baseline"), key=lambda c: c.id)
          + sorted((c for c in CHECKS if c.level == "restricted"), key=lambda c: c.id))


def checks_for(lv: LevelVersion) -> list[tuple[str, CheckFn]]:
    if lv.level == "privileged":
        return []
    version = lv.effective
    active = [(c, c.at(version)) for c in _ORDER
              if c.level == "baseline" or lv.level == "restricted"]
    active = [(c, fn) for c, fn in active if fn is not None]
    replaced = {o for c, _ in active for o in c.overrides}
    return [(c.id, fn) for c, fn in active if c.id not in replaced]


def evaluate(lv: LevelVersion, metadata: Meta | None, spec: Spec | None) -> list[Violation]:
    """The failed checks of a pod (its metadata and spec) at a level and version."""
    meta, spec = metadata or {}, spec or {}
    out = []
    for check_id, fn in checks_for(lv):
        result = fn(meta, spec)
        if result is not None:
            out.append(Violation(check_id, *result))
    return out


def forbidden_detail(violations: list[Violation]) -> str:
    return ", ".join(f"{v.reason} ({v.detail})" if v.detail else v.reason for v in violations)


# --------------------------------------------------------------------------- pod templates
def pod_template(obj: dict) -> tuple[Meta, Spec] | None:
    """(metadata, spec) of a Pod or of a workload's pod template; None for other kinds."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return obj.get("metadata") or {}, spec
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    elif kind not in ("Deployment", "Job", "ReplicaSet", "StatefulSet", "DaemonSet",
                      "ReplicationController", "PodTemplate"):
        return None
    template = (obj.get("template") if kind == "PodTemplate" else spec.get("template")) or {}
    return template.get("metadata") or {}, template.get("spec") or {}
