"""Images in Docker mode: resolution against the local engine, and small images made from host files.

`DockerImages` replaces the YAML registry (`localcluster.runtime.registry`) when pods run as Docker
containers: an image is what the local engine has (``GET /images/{name}/json``); nothing is ever
pulled, so an image not built locally raises `ImageNotFound` (the kubelet reports ErrImagePull,
then ImagePullBackOff). Entrypoint, cmd, user, workdir and env come from the image's config, so a
container's ``command``/``args`` override ENTRYPOINT/CMD as Kubernetes defines it.

`import_host_files` makes an image from files of this host (with the shared libraries they need)
by ``docker import``: the sandbox ("pause") image of every pod is made that way (the host's
``sleep`` and its libraries, a few MB), as are the tests' images. An image is tagged with a hash
of its content, so it is made once.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import tarfile

from localcluster.runtime.docker_client import DockerError, SyncDocker, q
from localcluster.runtime.registry import Image, ImageNotFound, InvalidImageName, parse_reference

PAUSE_REPO = "localcluster/pause"


class UnsupportedImage(InvalidImageName):
    """The image exists but cannot be run here (e.g. a USER given by name)."""


def _parse_user(user: str, reference: str) -> tuple[int, int | None]:
    if not user:
        return 0, None
    uid, _, gid = user.partition(":")
    if uid == "root":
        uid = "0"
    if not uid.isdigit() or (gid and not gid.isdigit()):
        # the kubelet needs the numeric uid (runAsNonRoot, and the uid passed to the engine)
        raise UnsupportedImage(f'image "{reference}" has a non-numeric USER {user!r}: in docker '
                               f"mode images must use numeric USER uid[:gid]")
    return int(uid), (int(gid) if gid else None)


def image_from_inspect(reference: str, info: dict) -> Image:
    """An `Image` (the kubelet's view) from the engine's image inspection."""
    cfg = info.get("Config") or {}
    uid, gid = _parse_user(cfg.get("User") or "", reference)
    env = dict(e.split("=", 1) for e in cfg.get("Env") or [] if "=" in e)
    return Image(reference=reference, image_id=info["Id"],
                 entrypoint=tuple(cfg.get("Entrypoint") or ()), cmd=tuple(cfg.get("Cmd") or ()),
                 uid=uid, gid=gid, workdir=cfg.get("WorkingDir") or None, env=env)


class DockerImages:
    """The kubelet's image source in docker mode (same `resolve` as `registry.Registry`).

    ``resolve`` is synchronous, as the kubelet calls it: one local inspection over the engine's
    unix socket (milliseconds)."""

    def __init__(self, client: SyncDocker | None = None) -> None:
        self.client = client or SyncDocker()

    def names(self) -> list[str]:
        try:
            images = self.client.request("GET", "/images/json")
        except DockerError:
            return []
        return sorted(t for i in images or [] for t in i.get("RepoTags") or []
                      if t != "<none>:<none>")

    def resolve(self, reference: str) -> Image:
        parse_reference(reference)  # InvalidImageName as the YAML registry
        try:
            info = self.client.request("GET", f"/images/{q(reference)}/json", timeout=10)
        except DockerError as e:
            if e.status == 404:
                raise ImageNotFound(
                    f'failed to pull and unpack image "{reference}": not built on this machine '
                    f"(the local cluster never pulls images; build it first)") from e
            raise ImageNotFound(f'cannot inspect image "{reference}": {e.message}') from e
        return image_from_inspect(reference, info)


# --- images made from host files -------------------------------------------------------------

def _needed_libraries(paths: list[str]) -> set[str]:
    """The shared libraries (and loader) the ELF files among paths need, from ldd."""
    libs: set[str] = set()
    elfs = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    elfs.append(p)
        except OSError:
            continue
    for start in range(0, len(elfs), 200):
        out = subprocess.run(["ldd", *elfs[start:start + 200]], capture_output=True,
                             text=True, check=False).stdout
        for m in re.finditer(r"(/\S+)\s+\(0x", out):
            libs.add(m[1])
    return libs


def _expand(paths: list[str]) -> list[str]:
    files = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs[:] = [d for d in dirs if d not in ("__pycache__", "test", "site-packages")]
                files.extend(os.path.join(root, n) for n in names)
        elif os.path.exists(p):
            files.append(p)
    return files


def _content_key(files: list[str], changes: list[str], extra: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    for c in changes:
        h.update(c.encode() + b"\0")
    for name, data in sorted(extra.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


_BASE_FILES = {
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n",
    "etc/group": b"root:x:0:\nuser:x:1000:\n",
}


def _tar(files: list[str], extra: dict[str, bytes], links: set[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("bin", "lib", "lib64", "sbin"):  # merged /usr, as on the host
            target = os.readlink(f"/{name}") if os.path.islink(f"/{name}") else None
            if target:
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
        for d, mode in (("tmp", 0o1777), ("proc", 0o755), ("sys", 0o755), ("dev", 0o755),
                        ("etc", 0o755), ("root", 0o700)):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        names = set()
        for f in sorted(set(files)):
            tar.add(f, arcname=f.lstrip("/"), recursive=False)
            names.add(f.lstrip("/"))
        for link in sorted(links):
            # a library as the binaries ask for it (/lib/x86_64-linux-gnu/libc.so.6) resolves
            # through the merged-/usr symlinks; add that name where it is not the file itself
            arc = os.path.join(os.path.realpath(os.path.dirname(link)),
                               os.path.basename(link)).lstrip("/")
            if arc not in names:
                info = tarfile.TarInfo(arc)
                info.type, info.linkname = tarfile.SYMTYPE, os.path.realpath(link)
                tar.addfile(info)
                names.add(arc)
        for name, data in sorted({**_BASE_FILES, **extra}.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def import_host_files(client: SyncDocker, repo: str, paths: list[str],
                      changes: list[str] | None = None,
                      extra: dict[str, bytes] | None = None) -> str:
    """An image ``repo:<content hash>`` holding the host files under paths (directories
    recursively, without caches and tests), the libraries they need, a minimal /etc and the
    Dockerfile-style ``changes`` (e.g. ``ENTRYPOINT ["/x"]``); made only when missing.
    Returns the reference."""
    changes = list(changes or [])
    extra = dict(extra or {})
    files = _expand([os.path.realpath(p) for p in paths])
    libs = {os.path.realpath(lib) for lib in _needed_libraries(files)}
    # the loader's and libraries' own names (symlinks) as the binaries ask for them
    links = set(_needed_libraries(files)) | {p for p in paths if os.path.islink(p)}
    all_files = sorted(set(files) | libs)
    tag = _content_key(all_files + sorted(links), changes, extra)
    reference = f"{repo}:{tag}"
    try:
        client.request("GET", f"/images/{q(reference)}/json")
        return reference
    except DockerError as e:
        if e.status != 404:
            raise
    data = _tar(all_files, extra, links)
    client.request("POST", "/images/create",
                   {"fromSrc": "-", "repo": repo, "tag": tag, "changes": changes},
                   data=data, content_type="application/x-tar", timeout=300)
    return reference


def pause_image(client: SyncDocker) -> str:
    """The pods' sandbox image: the host's ``sleep`` (holds the pod's network namespace)."""
    sleep = subprocess.run(["sh", "-c", "command -v sleep"], capture_output=True, text=True,
                           check=False).stdout.strip() or "/usr/bin/sleep"
    real = os.path.realpath(sleep)
    return import_host_files(client, PAUSE_REPO, [real],
                             changes=[f'ENTRYPOINT ["{real}", "infinity"]'])
