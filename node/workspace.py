"""Per-run files on the node's task_dir: input and token in (read-only for the pod), output and
tmp (writable for the pod), the output read back as the result, and removal afterwards."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from node.config import NodeConfig
from node.errors import NodeError
from node.manifests import run_paths
from node.models import TaskCommand

log = logging.getLogger(__name__)


class OutputTooLarge(NodeError):
    pass


class Workspace:
    def __init__(self, config: NodeConfig):
        self.config = config
        self.root = Path(config.task_dir)
        self.uid = config.job.run_as_user
        self.gid = config.job.run_as_group

    def paths(self, run_id: int):
        return run_paths(self.config, run_id)

    def prepare(self, cmd: TaskCommand) -> None:
        """Create the run's directories and write its input and token.

        The run directory itself stays private to the node; the pod reaches the subdirectories
        only through its mounts, so their own modes are what matter to the algorithm.
        """
        p = self.paths(cmd.run_id)
        Path(p.root).mkdir(parents=True, exist_ok=True)
        os.chmod(p.root, 0o711)
        for d, mode in ((p.task, 0o755), (p.output, 0o770), (p.tmp, 0o770)):
            Path(d).mkdir(parents=True, exist_ok=True)
            self._own(d, mode)
        self._write(Path(p.task) / "input", cmd.input_bytes, 0o444)
        self._write(Path(p.task) / "token", cmd.token.encode(), 0o440)

    def _own(self, path, mode: int) -> None:
        # As root, hand the writable directories to the pod's user; otherwise (node as non-root
        # in its own pod) fsGroup covers PVCs and the modes must be group-writable.
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.gid)
        os.chmod(path, mode)

    def _write(self, path: Path, data: bytes, mode: int) -> None:
        tmp = path.with_name(path.name + ".part")
        with open(tmp, "wb") as f:
            f.write(data)
        self._own(tmp, mode)
        os.replace(tmp, path)

    def read_output(self, run_id: int) -> str:
        """The run's result: OUTPUT_FILE, else the only regular file in the output directory."""
        out = Path(self.paths(run_id).output)
        target = out / "output"
        if not target.is_file():
            files = [f for f in out.iterdir() if f.is_file() and not f.is_symlink()] \
                if out.is_dir() else []
            if len(files) != 1:
                return ""
            target = files[0]
        if target.is_symlink():
            raise NodeError("the output file is a symbolic link; refusing to follow it")
        size = target.stat().st_size
        limit = self.config.output.max_bytes
        if size > limit:
            raise OutputTooLarge(f"output is {size} bytes, more than the allowed {limit}")
        return target.read_bytes().decode("utf-8", errors="replace")

    def remove(self, run_id: int) -> None:
        """Everything of the run, unless the config keeps outputs."""
        p = self.paths(run_id)
        shutil.rmtree(p.task, ignore_errors=True)
        shutil.rmtree(p.tmp, ignore_errors=True)
        if not self.config.output.keep:
            shutil.rmtree(p.root, ignore_errors=True)

