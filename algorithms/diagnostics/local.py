"""Checks of the pod's own set-up: env, mounts, identity, root filesystem, service account."""
from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from algorithms.common.env import AlgorithmEnv, load_env, missing_vars
from algorithms.common.errors import EnvError

from .report import Check, failed, passed, undecided

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
# A write refused with these errnos shows the algorithm cannot modify the file or directory.
DENIED = {errno.EROFS: "EROFS", errno.EACCES: "EACCES", errno.EPERM: "EPERM"}


def _probe_name() -> str:
    return f".v6-diagnostics-{secrets.token_hex(6)}"


def check_env(environ: Mapping[str, str]) -> Check:
    missing = missing_vars(environ)
    try:
        load_env(environ)
    except EnvError as e:
        return failed("env_present", f"malformed: {e}"
                      + (f"; missing: {', '.join(missing)}" if missing else ""))
    if missing:
        return failed("env_present", f"missing: {', '.join(missing)}")
    return passed("env_present", "all expected variables are set")


def try_write_open(path: Path) -> str | None:
    """Open an existing file for writing without changing it. None when that worked, else why not."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    os.close(fd)
    return None


def try_create(directory: Path) -> str | None:
    """Create and remove a new file in `directory`. None when that worked, else the errno name."""
    path = directory / _probe_name()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    os.close(fd)
    os.unlink(path)
    return None


def input_files(env: AlgorithmEnv) -> list[Path]:
    files = [p for p in (env.input_file, env.token_file) if p is not None]
    return files + [Path(db.uri) for db in env.databases if db.uri]


def check_input_readable(env: AlgorithmEnv) -> Check:
    files = [p for p in [env.input_file] + [Path(db.uri) for db in env.databases if db.uri] if p]
    if not files:
        return undecided("input_readable", "no input file or database path in the env")
    problems = []
    for path in files:
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as e:
            problems.append(f"{path}: {errno.errorcode.get(e.errno, e.errno)}")
    if problems:
        return failed("input_readable", "cannot read " + "; ".join(problems))
    return passed("input_readable", f"read {len(files)} file(s)")


def check_input_read_only(env: AlgorithmEnv) -> Check:
    """The task files and databases must not be writable: writing is attempted and must fail."""
    attempts: list[tuple[str, str | None]] = []
    for path in input_files(env):
        attempts.append((f"open {path} for writing", try_write_open(path)))
    # The directories holding them too: the task directory and the databases' /app/input/csv.
    directories = dict.fromkeys(p.parent for p in input_files(env))
    for directory in directories:
        attempts.append((f"create a file in {directory}", try_create(directory)))
    if not attempts:
        return undecided("input_read_only", "no input paths in the env")
    allowed = [what for what, err in attempts if err is None]
    if allowed:
        return failed("input_read_only", "writable: " + "; ".join(allowed))
    other = [f"{what}: {err}" for what, err in attempts
             if err not in DENIED.values()]
    detail = "; ".join(f"{what}: {err}" for what, err in attempts)
    if other:
        return undecided("input_read_only", f"no write succeeded, but not every attempt was "
                                            f"refused as read-only/denied: {detail}")
    return passed("input_read_only", f"every write refused: {detail}")


def check_writable(name: str, directory: Path | None) -> Check:
    if directory is None:
        return undecided(name, "the directory is not set in the env")
    path = directory / _probe_name()
    data = secrets.token_bytes(16)
    try:
        with open(path, "xb") as f:
            f.write(data)
        with open(path, "rb") as f:
            back = f.read()
        os.unlink(path)
    except OSError as e:
        return failed(name, f"{directory}: {e.strerror or e} "
                            f"({errno.errorcode.get(e.errno, e.errno)})")
    if back != data:
        return failed(name, f"{directory}: read back different bytes than written")
    return passed(name, f"{directory}: wrote, read back and removed a file")


def check_token(env: AlgorithmEnv) -> Check:
    if env.token_file is None:
        return failed("token_present", "TOKEN_FILE is not set")
    try:
        token = env.token_file.read_bytes().strip()
    except OSError as e:
        return failed("token_present", f"{env.token_file}: {e.strerror or e}")
    if not token:
        return failed("token_present", f"{env.token_file} is empty")
    # Only the size: the token itself is a secret.
    return passed("token_present", f"{env.token_file}: {len(token)} bytes")


def check_non_root() -> Check:
    uid, gid = os.geteuid(), os.getegid()
    detail = f"uid={uid} gid={gid}"
    return passed("non_root", detail) if uid != 0 else failed("non_root", detail + " (root)")


def root_mount_options(mountinfo: str) -> tuple[str, str] | None:
    """(mount options, super options) of the mount at "/" in a /proc/self/mountinfo text.
    The last entry for "/" is the one on top, the one this process sees."""
    found = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 10 or fields[4] != "/" or "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        found = (fields[5], fields[sep + 3] if len(fields) > sep + 3 else "")
    return found


def check_root_read_only(mountinfo_path: Path = Path("/proc/self/mountinfo"),
                         root: Path = Path("/")) -> Check:
    """Decided by the mount flags (statvfs, then mountinfo). Writes are attempted only on a root
    that claims to be read-only, to confirm it; a refused write alone proves nothing, since a
    non-root user gets EACCES on a writable root too."""
    name = "root_fs_read_only"
    notes = []
    try:
        options = root_mount_options(mountinfo_path.read_text())
    except OSError as e:
        options = None
        notes.append(f"mountinfo unreadable: {e.strerror or e}")
    if options is not None:
        notes.append(f"mountinfo options {options[0]} (super {options[1]})")
    try:
        read_only = bool(os.statvfs(root).f_flag & os.ST_RDONLY)
        notes.insert(0, f"statvfs: {'ro' if read_only else 'rw'}")
    except OSError as e:
        notes.insert(0, f"statvfs failed: {e.strerror or e}")
        if options is None:
            return undecided(name, "; ".join(notes))
        read_only = "ro" in options[0].split(",")
    if not read_only:
        return failed(name, "; ".join(notes))
    for directory in (root, root / "usr"):
        err = try_create(directory)
        notes.append(f"create in {directory}: {err or 'succeeded'}")
        if err is None:
            return failed(name, "; ".join(notes))
    return passed(name, "; ".join(notes))


def check_no_service_account(path: Path = SERVICE_ACCOUNT_TOKEN) -> Check:
    name = "no_service_account_token"
    try:
        exists = path.exists()
    except OSError as e:
        return undecided(name, f"cannot tell whether {path} exists: {e.strerror or e}")
    if exists:
        return failed(name, f"{path} is mounted")
    return passed(name, f"{path} is absent")
