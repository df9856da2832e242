"""Container shim: sets up one container's view of the machine, then execs its command.

Run by the process runtime as
``unshare --mount --propagation private <python> -I shim.py SPEC.json`` (as root), so every mount
below happens in the container's own private mount namespace and never shows on the host.
The container gets a private root: an overlay of the host's ``/`` with a tmpfs upper layer
(``root_dir``), chrooted into, so its writes outside volumes — and mount points such as ``/app``
— stay in the container; the host's other file systems (/proc, /dev, /sys…) are bound in.
Standard library only: it runs with ``-I`` (isolated), without the project on ``sys.path``.

SPEC.json: ``{"argv", "env", "cwd", "mounts": [{"source", "target", "readonly"}],
"root_readonly", "uid", "gid", "groups", "no_new_privs", "capabilities" (names kept in the
bounding set; null = Docker's default set for uid 0, none otherwise), "cgroups" (cgroup
directories to join), "reachable" (paths the uid must be able to reach, e.g. the interpreter),
"namespace" (false: no mount setup, identity unchanged — the non-root fallback), "error_file",
"parent_pid" (the cluster process: the container gets SIGKILL when it dies), "root_dir" (an
empty directory for the private root; absent: no private root), "netns" (path of a network
namespace to join first, e.g. ``/run/netns/lcn0-2``; absent or null: the host's network)}``.

On a setup failure the shim writes the reason to ``error_file`` and exits 128, so the runtime can
report it (as a container runtime reports StartError / CreateContainerError).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import re
import signal
import stat
import sys

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNET = 0x40000000
SETUP_FAILED = 128

# Docker's default capability set for root containers (moby oci/caps/defaults.go).
DEFAULT_ROOT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
                     "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
                     "AUDIT_WRITE")
CAP_NUMBERS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
    "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}


class SetupError(Exception):
    """The container cannot be set up; the message goes to the runtime."""


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise SetupError(f"mount {source or ''} on {target}: {os.strerror(err)}")


def _prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise SetupError(f"prctl({option}, {arg}): {os.strerror(err)}")


def enter_netns(path: str) -> None:
    """Join the pod's network namespace (all containers of a pod share it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SetupError(f"network namespace {path}: {e.strerror}") from e
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise SetupError(f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


# --- making paths reachable for a non-root uid -------------------------------------------------

def can_traverse(st: os.stat_result, uid: int, gids: set[int]) -> bool:
    """Whether uid (with gids) may search a directory with this stat (ACLs ignored)."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in gids:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def blocked_ancestors(paths: list[str], uid: int, gids: set[int],
                      stat_fn=os.stat) -> dict[str, set[str]]:
    """For each path, its topmost ancestor uid cannot search → the child names needed inside."""
    out: dict[str, set[str]] = {}
    for path in paths:
        parts = [p for p in os.path.normpath(path).split("/") if p]
        cur = "/"
        for comp in parts:
            try:
                st = stat_fn(cur)
            except OSError:
                break
            if not can_traverse(st, uid, gids):
                out.setdefault(cur, set()).add(comp)
                break
            cur = os.path.join(cur, comp)
    return out


def make_reachable(paths: list[str], uid: int, gids: set[int]) -> None:
    """Cover each unsearchable ancestor with a 0755 tmpfs holding only the needed children.

    E.g. /root (0700) on the way to /root/.pyenv: /root/.pyenv is opened, a tmpfs is mounted on
    /root, and the opened directory is bind-mounted back at /root/.pyenv. Only inside this mount
    namespace; the rest of /root stays hidden from the container.
    """
    paths = [p for p in paths if p and os.path.exists(p)]
    for _ in range(32):  # each round covers one more level; real trees need very few
        blocked = blocked_ancestors(paths, uid, gids)
        if not blocked:
            return
        for parent, children in sorted(blocked.items()):
            fds = {}
            try:
                for child in children:
                    fds[child] = os.open(os.path.join(parent, child), os.O_PATH)
                _mount("tmpfs", parent, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
                for child, fd in fds.items():
                    target = os.path.join(parent, child)
                    if stat.S_ISDIR(os.fstat(fd).st_mode):
                        os.mkdir(target, 0o755)
                    else:
                        open(target, "w").close()
                    _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
            finally:
                for fd in fds.values():
                    os.close(fd)
    raise SetupError(f"cannot make {paths} reachable for uid {uid}")


# --- mount points ------------------------------------------------------------------------------

class MountPoints:
    """Creates mount targets. In the private root they land in the container's own layer; where
    a target lies on a host file system bound in (or there is no private root) only an empty
    directory is left there: what is created below it goes to a covering private tmpfs."""

    def __init__(self) -> None:
        self.ours: list[str] = []  # tmpfs mounts made here; creating inside them is private

    def _is_ours(self, path: str) -> bool:
        return any(path == t or path.startswith(t.rstrip("/") + "/") for t in self.ours)

    def _cover(self, path: str) -> None:
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        self.ours.append(path)

    def ensure_dir(self, path: str) -> None:
        parts = [p for p in os.path.normpath(path).split("/") if p]
        cur = "/"
        for comp in parts:
            nxt = os.path.join(cur, comp)
            if not os.path.lexists(nxt):
                if not self._is_ours(cur):
                    if os.path.isdir(cur) and not os.listdir(cur):
                        # an empty host directory (e.g. /app left by an earlier container):
                        # cover it so the children we create stay private
                        self._cover(cur)
                    else:
                        # a missing top-level directory like /app: created empty on the host
                        # (the only trace left there), then covered with a private tmpfs so
                        # nothing created below it reaches the host
                        os.makedirs(nxt, 0o755, exist_ok=True)
                        self._cover(nxt)
                        cur = nxt
                        continue
                os.mkdir(nxt, 0o755)
            cur = nxt

    def ensure_file(self, path: str) -> None:
        if os.path.lexists(path):
            return
        parent = os.path.dirname(path)
        self.ensure_dir(parent)
        if not self._is_ours(parent) and os.path.isdir(parent) and not os.listdir(parent):
            self._cover(parent)
        # when the parent is a non-empty host directory this leaves an empty file there, as
        # bind-mounting a file onto a missing path does with a real container runtime
        open(path, "a").close()


def _mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            raw = line.split()[4]
            points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), raw))
    return points


def enter_private_root(staging: str) -> None:
    """chroot into an overlay of the host's / whose upper layer is a tmpfs in this namespace.

    Writes outside the volumes (and mount points created for them, such as /app) then stay in
    the container instead of reaching the host's root filesystem; other file systems mounted on
    the host (/proc, /dev, /sys, ...) are bound in unchanged.
    """
    _mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    upper, work, root = (os.path.join(staging, d) for d in ("upper", "work", "root"))
    for d in (upper, work, root):
        os.mkdir(d, 0o755)
    _mount("overlay", root, "overlay", 0, f"lowerdir=/,upperdir={upper},workdir={work}")
    kept: list[str] = []
    for mp in sorted(set(_mount_points())):
        if mp == "/" or mp == staging or mp.startswith(staging.rstrip("/") + "/") or any(
                mp.startswith(k.rstrip("/") + "/") for k in kept):
            continue  # the root itself, our own mounts, or inside one bound already
        target = root + mp
        if os.path.isdir(mp) and os.path.isdir(target) or \
                os.path.isfile(mp) and os.path.isfile(target):
            _mount(mp, target, None, MS_BIND | MS_REC)
            kept.append(mp)
    os.chroot(root)
    os.chdir("/")


def setup_mounts(spec: dict, reachable: list[str], uid: int, gids: set[int]) -> None:
    mounts = sorted(spec.get("mounts", []), key=lambda m: os.path.normpath(m["target"]).count("/"))
    # sources are opened in the host's view: after the chroot the same paths would name the
    # overlay, where writes would not reach the host
    fds = []
    try:
        for m in mounts:
            try:
                fds.append(os.open(m["source"], os.O_PATH))
            except OSError as e:
                raise SetupError(f"mount source {m['source']}: {e.strerror}") from e
        if spec.get("root_dir"):
            enter_private_root(spec["root_dir"])
        make_reachable(reachable, uid, gids)  # before the binds, which it could cover
        _bind_all(mounts, fds)
    finally:
        for fd in fds:
            os.close(fd)
    cwd = spec.get("cwd")
    if cwd and not os.path.isdir(cwd):
        MountPoints().ensure_dir(cwd)  # a container runtime creates a missing workingDir
    if spec.get("root_readonly"):
        _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def _bind_all(mounts: list[dict], fds: list[int]) -> None:
    points = MountPoints()
    for m, fd in zip(mounts, fds):
        target = os.path.normpath(m["target"])
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            points.ensure_dir(target)
        else:
            points.ensure_file(target)
        _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        if m.get("readonly"):
            _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


# --- identity and privileges -------------------------------------------------------------------

def drop_bounding_set(keep: list[str]) -> None:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except OSError:
        last = max(CAP_NUMBERS.values())
    keep_numbers = {CAP_NUMBERS[c] for c in keep if c in CAP_NUMBERS}
    for cap in range(last + 1):
        if cap not in keep_numbers:
            _prctl(PR_CAPBSET_DROP, cap)


def become(spec: dict) -> None:
    uid, gid = int(spec.get("uid", 0)), int(spec.get("gid", 0))
    caps = spec.get("capabilities")
    if caps is None:
        caps = list(DEFAULT_ROOT_CAPS) if uid == 0 else []
    # dropping from the bounding set needs CAP_SETPCAP, so it comes before setuid; for uid 0 it
    # is what removes the capabilities at exec, for other uids setuid clears them anyway
    drop_bounding_set(caps)
    os.setgroups([int(g) for g in spec.get("groups", [])])
    os.setgid(gid)
    os.setuid(uid)


def run(spec: dict) -> None:
    """Everything up to the exec; raises SetupError."""
    if spec.get("netns"):
        enter_netns(spec["netns"])  # first: before privileges are dropped
    pid = str(os.getpid())
    for cg in spec.get("cgroups", []):
        try:
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                f.write(pid)
        except OSError as e:
            raise SetupError(f"cannot join cgroup {cg}: {e.strerror}") from e
    if spec.get("namespace"):
        uid, gid = int(spec.get("uid", 0)), int(spec.get("gid", 0))
        gids = {gid, *(int(g) for g in spec.get("groups", []))}
        needed = list(spec.get("reachable", []))
        if spec.get("cwd"):
            needed.append(spec["cwd"])
        setup_mounts(spec, needed, uid, gids)
        become(spec)
    # the container dies with the cluster process even if that is killed without cleaning up;
    # set after the uid change, which would clear it
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if spec.get("parent_pid") and os.getppid() != spec["parent_pid"]:
        raise SetupError("the local cluster process is gone")
    if spec.get("no_new_privs", True):
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
    cwd = spec.get("cwd")
    if cwd:
        try:
            os.chdir(cwd)
        except OSError as e:
            raise SetupError(f"chdir to {cwd}: {e.strerror}") from e


_error_fd = -1  # opened before the chroot, so the runtime reads the reason on the host


def _fail(spec: dict, message: str) -> None:
    if _error_fd >= 0:
        try:
            os.write(_error_fd, message.encode())
        except OSError:
            pass
    print(f"localcluster shim: {message}", file=sys.stderr, flush=True)
    os._exit(SETUP_FAILED)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        print("usage: shim.py SPEC.json", file=sys.stderr)
        sys.exit(2)
    global _error_fd
    with open(argv[1]) as f:
        spec = json.load(f)
    if spec.get("error_file"):
        try:  # non-inheritable (PEP 446): the container never sees it
            _error_fd = os.open(spec["error_file"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError:
            pass
    try:
        run(spec)
    except (SetupError, OSError) as e:
        _fail(spec, str(e))
    args = [str(a) for a in spec["argv"]]
    env = {str(k): str(v) for k, v in spec.get("env", {}).items()}
    try:
        os.execvpe(args[0], args, env)
    except OSError as e:
        reason = ("executable file not found in $PATH" if e.errno == errno.ENOENT
                  else e.strerror)
        _fail(spec, f'exec: "{args[0]}": {reason}')


if __name__ == "__main__":
    main(sys.argv)
