"""Where the kubelet keeps container logs and (shared by the kubelet and the API server).

Layout (as a real kubelet's /var/log/pods): ``<state dir>/pods/<namespace>_<pod>_<uid>/
<container>/<restartCount>.log``, each line in the CRI log format
``<RFC3339Nano> <stdout|stderr> <F|P> <text>``. The kubelet should take paths from
``log_path`` so both sides agree.
"""
from __future__ import annotations

from pathlib import Path


def log_dir(state_dir: Path, namespace: str, pod: str, uid: str, container: str) -> Path:
    return Path(state_dir) / "pods" / f"{namespace}_{pod}_{uid}" / container


def log_path(state_dir: Path, namespace: str, pod: str, uid: str, container: str,
             restart_count: int) -> Path:
    return log_dir(state_dir, namespace, pod, uid, container) / f"{restart_count}.log"
