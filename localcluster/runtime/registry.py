"""Image registry: YAML files that map image references to local commands (CONTRACTS.md §1).

```yaml
images:
  v6-demo/avg:                 # matches "v6-demo/avg" and "v6-demo/avg:latest"
    entrypoint: ["{python}", "-m", "algorithms.avg"]
    cmd: []
    user: 1000                 # or "1000:1000"; absent = root, as an image without USER
    workdir: "{repo}"
    env: {PYTHONPATH: "{repo}"}
  test/fake-algo:
    fake: {delay: 2s, exit-code: 0}   # or `fake: true`: run by the fake runtime, no command
```
A key with a tag (``name:tag``) matches only that exact reference. ``{python}`` and ``{repo}``
expand to the interpreter running the cluster and the repository root. ``fake`` marks an image
whose containers the fake runtime completes without a process (`localcluster.runtime.fake_spec`:
its mapping gives the defaults of the pod annotations); such an entry needs no command.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from localcluster.runtime.fake_spec import FakeSpecError, registry_defaults

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_IMAGES_FILE = Path(__file__).resolve().parent.parent / "images.yaml"

# The distribution reference grammar, simplified: [host[:port]/]path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)"
_REFERENCE = re.compile(
    rf"^(?P<name>{_HOST}?{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$")


class RegistryError(Exception):
    """Base of the registry's errors."""


class RegistryConfigError(RegistryError):
    """A registry file is missing or malformed."""


class InvalidImageName(RegistryError):
    """The reference does not parse (a kubelet reports InvalidImageName)."""


class ImageNotFound(RegistryError):
    """No registry entry matches (a kubelet reports ErrImagePull)."""


@dataclass(frozen=True)
class ImageRef:
    name: str
    tag: str | None
    digest: str | None


@dataclass(frozen=True)
class Image:
    """One resolved image: what a container of it runs, before `command`/`args` overrides."""

    reference: str
    image_id: str
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    uid: int = 0
    gid: int | None = None
    workdir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    fake: dict[str, Any] | None = None  # the fake runtime's defaults; None: a real image


def parse_reference(ref: str) -> ImageRef:
    """Split an image reference; raise InvalidImageName when it does not parse."""
    m = _REFERENCE.match(ref or "")
    first = ref.split("/", 1)[0] if "/" in (ref or "") else ""
    if m and first and first != first.lower() and not (
            "." in first or ":" in first or first == "localhost"):
        m = None  # not a registry host, so a path component, which must be lower case
    if not m or len(ref) > 255:
        raise InvalidImageName(f'Failed to apply default image tag "{ref}": couldn\'t parse image '
                               f'name "{ref}": invalid reference format')
    return ImageRef(m["name"], m["tag"], m["digest"])


def _parse_user(value: Any, where: str) -> tuple[int, int | None]:
    if value is None:
        return 0, None
    text = str(value)
    uid, _, gid = text.partition(":")
    try:
        return int(uid), (int(gid) if gid else None)
    except ValueError:
        raise RegistryConfigError(f"{where}: user must be numeric 'uid' or 'uid:gid', "
                                  f"got {value!r}") from None


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise RegistryConfigError(f"{where}: expected a list of strings")
    return tuple(str(v) for v in value)


class Registry:
    """Image entries from one or more YAML files; later files override earlier ones."""

    def __init__(self, entries: dict[str, Image] | None = None) -> None:
        self._entries: dict[str, Image] = dict(entries or {})

    @classmethod
    def load(cls, paths: list[Path], python: str | None = None,
             repo: Path | None = None) -> Registry:
        subst = {"python": python or sys.executable, "repo": str(repo or REPO_ROOT)}
        entries: dict[str, Image] = {}
        for path in paths:
            entries.update(_load_file(Path(path), subst))
        return cls(entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def has_fakes(self) -> bool:
        return any(e.fake is not None for e in self._entries.values())

    def resolve(self, reference: str) -> Image:
        """The entry for an image reference; InvalidImageName / ImageNotFound otherwise."""
        ref = parse_reference(reference)
        entry = self._entries.get(reference)
        if entry is None and ref.tag in (None, "latest") and ref.digest is None:
            entry = self._entries.get(ref.name)
        if entry is None and ref.name.startswith("docker.io/"):
            # docker.io/library/x and docker.io/x are the same image as x
            short = ref.name.removeprefix("docker.io/").removeprefix("library/")
            alias = short + (f":{ref.tag}" if ref.tag else "")
            entry = self._entries.get(alias) or (
                self._entries.get(short) if ref.tag in (None, "latest") else None)
        if entry is None:
            raise ImageNotFound(
                f'failed to pull and unpack image "{reference}": rpc error: code = Unknown desc = '
                f'failed to resolve reference "{reference}": pull access denied, repository does '
                f"not exist or may require authorization: not in the local cluster's image "
                f"registry")
        return Image(reference=reference, image_id=entry.image_id, entrypoint=entry.entrypoint,
                     cmd=entry.cmd, uid=entry.uid, gid=entry.gid, workdir=entry.workdir,
                     env=dict(entry.env), fake=entry.fake)


def _load_file(path: Path, subst: dict[str, str]) -> dict[str, Image]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise RegistryConfigError(f"cannot read image registry {path}: {e}") from e
    except yaml.YAMLError as e:
        raise RegistryConfigError(f"image registry {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), dict):
        raise RegistryConfigError(f"{path}: expected a mapping with an 'images' mapping")

    def expand(s: str) -> str:
        # str.format would choke on other braces; only our two placeholders are replaced
        return s.replace("{python}", subst["python"]).replace("{repo}", subst["repo"])

    out: dict[str, Image] = {}
    for key, spec in data["images"].items():
        where = f"{path}: image {key!r}"
        key = str(key)
        try:
            parse_reference(key)
        except InvalidImageName:
            raise RegistryConfigError(f"{where}: not a valid image reference") from None
        spec = spec or {}
        if not isinstance(spec, dict):
            raise RegistryConfigError(f"{where}: expected a mapping")
        unknown = set(spec) - {"entrypoint", "cmd", "user", "workdir", "env", "fake"}
        if unknown:
            raise RegistryConfigError(f"{where}: unknown keys {sorted(unknown)}")
        env = spec.get("env") or {}
        if not isinstance(env, dict):
            raise RegistryConfigError(f"{where}: env must be a mapping")
        uid, gid = _parse_user(spec.get("user"), where)
        entrypoint = tuple(expand(a) for a in _str_list(spec.get("entrypoint"), where))
        cmd = tuple(expand(a) for a in _str_list(spec.get("cmd"), where))
        try:
            fake = registry_defaults(spec.get("fake"))
        except FakeSpecError as e:
            raise RegistryConfigError(f"{where}: {e}") from None
        if not entrypoint and not cmd and fake is None:
            raise RegistryConfigError(f"{where}: needs an entrypoint or a cmd")
        workdir = spec.get("workdir")
        digest = hashlib.sha256(json.dumps(
            # (fake only when set: real images keep the ids they had)
            [key, entrypoint, cmd, uid, gid, workdir, env, *([fake] if fake is not None else [])],
            sort_keys=True,
            default=str).encode()).hexdigest()
        out[key] = Image(
            reference=key, image_id=f"{key.split(':')[0]}@sha256:{digest}",
            entrypoint=entrypoint, cmd=cmd, uid=uid, gid=gid,
            workdir=expand(str(workdir)) if workdir else None,
            env={str(k): expand(str(v)) for k, v in env.items()}, fake=fake)
    return out
